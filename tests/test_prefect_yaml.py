"""prefect.yaml's static maintenance deployments, against a real Prefect server.

`prefect deploy --all` runs as users run it (a subprocess in the repository, no
prompts); the deployments it creates are compared with what `svrctl up` creates
(``ensure_maintenance_deployments``), `svrctl sync` must leave them alone, and
each one runs once through a real `svrctl worker`.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest
import yaml
from fixtures.prefect_server import PrefectServer
from fixtures.processes import stop_groups
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from svrctl.db.engine import Database, open_database
from svrctl.db.migrate import upgrade
from svrctl.db.models import RunStatus, TaskHistory, utcnow
from svrctl.execution.history import Outcome, begin_attempt, finish_attempt
from svrctl.flows.maintenance import (
    ADMIN_TAG,
    MAINTENANCE_TAG,
    STATIC_DEPLOYMENTS,
    ensure_maintenance_deployments,
)
from svrctl.specs import TaskSpec
from svrctl.sync import ENTRYPOINT as RUN_TASK_ENTRYPOINT
from svrctl.sync import MANAGED_TAG
from svrctl.tasks import add_task
from svrctl.worker import ensure_work_pool

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POOL = "svrctl"
NAMES = [d.full_name for d in STATIC_DEPLOYMENTS]
# The scheduled ones need no parameters: each runs once on a worker.
SCHEDULED = [d.full_name for d in STATIC_DEPLOYMENTS if d.cron]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

T = TypeVar("T")


@dataclass
class Env:
    """The Prefect server, a private app database and the environment of subprocesses."""

    api: str
    db: Database
    env: dict[str, str]
    tmp: Path

    def call(self, job: Callable[[PrefectClient], Awaitable[T]]) -> T:
        async def run() -> T:
            async with PrefectClient(self.api) as client:
                return await job(client)

        return asyncio.run(run())

    def deployment(self, name: str) -> DeploymentResponse | None:
        async def read(client: PrefectClient) -> DeploymentResponse | None:
            try:
                return await client.read_deployment_by_name(name)
            except ObjectNotFound:
                return None

        return self.call(read)

    def delete_maintenance(self) -> None:
        async def delete(client: PrefectClient) -> None:
            for name in NAMES:
                try:
                    found = await client.read_deployment_by_name(name)
                except ObjectNotFound:
                    continue
                await client.delete_deployment(found.id)

        self.call(delete)

    def run(self, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def deploy_all(self) -> None:
        r = self.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        assert r.returncode == 0, r.stdout + r.stderr


def summary(d: DeploymentResponse) -> dict[str, Any]:
    """What both ways of creating a maintenance deployment must agree on."""
    return {
        "entrypoint": d.entrypoint,
        "tags": sorted(d.tags),
        "work_pool_name": d.work_pool_name,
        "work_queue_name": d.work_queue_name,
        "description": d.description,
        "parameters": d.parameters,
        "parameter_openapi_schema": d.parameter_openapi_schema,
        "enforce_parameter_schema": d.enforce_parameter_schema,
        "pull_steps": d.pull_steps or [],
        "paused": d.paused,
        "schedules": [(s.schedule.model_dump(mode="json"), s.active, s.slug) for s in d.schedules],
    }


@pytest.fixture
def env(
    prefect_server: PrefectServer,
    tmp_path: Path,
    sqlite_template: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    url = f"sqlite:///{home / 'svrctl.db'}"
    upgrade(url)
    child = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SVRCTL_"))}
    child |= {
        "HOME": str(tmp_path),
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SVRCTL_HOME": str(home),
        "SVRCTL_DATABASE_URL": url,
        "SVRCTL_TIMEZONE": "UTC",
    }
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    db = open_database(url)
    e = Env(prefect_server.api_url, db, child, tmp_path)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        asyncio.run(ensure_work_pool(POOL))
        e.delete_maintenance()
        try:
            yield e
        finally:
            # Later tests share the server: no maintenance runs scheduled into their pool.
            e.delete_maintenance()
            db.dispose()


# ----------------------------------------------------------------------------- the file


def test_prefect_yaml_declares_the_maintenance_deployments() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    # nothing to build, push or pull: the entrypoints are modules of the installed package
    assert config["build"] is None
    assert config["push"] is None
    assert config["pull"] == []
    declared = config["deployments"]
    assert len(declared) == len(STATIC_DEPLOYMENTS)
    for entry, spec in zip(declared, STATIC_DEPLOYMENTS, strict=True):
        assert entry["name"] == spec.name
        assert entry["entrypoint"] == spec.entrypoint
        assert entry["entrypoint"].startswith("svrctl.flows.")
        assert ".py:" not in entry["entrypoint"]
        assert " ".join(entry["description"].split()) == spec.description
        assert entry["work_pool"] == {"name": POOL, "work_queue_name": "default"}
        assert entry["tags"] == [spec.tag]
        assert spec.tag in (MAINTENANCE_TAG, ADMIN_TAG)
        assert MANAGED_TAG not in entry["tags"]  # sync must never think it owns them
        assert entry["parameters"] == spec.parameters
        if spec.cron is None:  # an admin flow: run from its form, never on a schedule
            assert spec.tag == ADMIN_TAG
            assert entry["schedules"] == []
            continue
        assert entry["schedules"] == [
            {"cron": spec.cron, "timezone": spec.timezone, "slug": "svrctl", "active": True}
        ]
        assert len(spec.cron.split()) == 5  # Prefect reads a 6th field as seconds at the end
        assert not any(k in entry for k in ("build", "push", "pull"))


# ----------------------------------------------------------------------------- prefect deploy


def test_deploy_all_creates_them_and_a_redeploy_keeps_their_ids(env: Env) -> None:
    env.deploy_all()
    first = {}
    for spec in STATIC_DEPLOYMENTS:
        d = env.deployment(spec.full_name)
        assert d is not None, spec.full_name
        assert d.entrypoint == spec.entrypoint
        assert d.work_pool_name == POOL
        assert d.tags == [spec.tag]
        assert d.pull_steps == []
        assert not d.paused
        if spec.cron is None:
            assert d.schedules == []
            first[spec.full_name] = (d.id, None)
            continue
        [schedule] = d.schedules
        assert schedule.active
        assert schedule.slug == "svrctl"
        assert schedule.schedule.model_dump(include={"cron", "timezone"}) == {
            "cron": spec.cron,
            "timezone": spec.timezone,
        }
        first[spec.full_name] = (d.id, schedule.id)

    env.deploy_all()  # schedules carry a slug: updated in place, no new ids
    for name, ids in first.items():
        d = env.deployment(name)
        assert d is not None
        assert (d.id, d.schedules[0].id if d.schedules else None) == ids
        assert len(d.schedules) == (1 if ids[1] else 0)


def test_svrctl_up_creates_what_prefect_deploy_creates_and_keeps_changes(env: Env) -> None:
    env.deploy_all()
    deployed = {}
    for name in NAMES:
        d = env.deployment(name)
        assert d is not None
        deployed[name] = summary(d)
    env.delete_maintenance()

    assert asyncio.run(ensure_maintenance_deployments(POOL)) == NAMES
    for name in NAMES:
        d = env.deployment(name)
        assert d is not None
        assert summary(d) == deployed[name], name

    # A schedule changed in Prefect (UI, CLI) is kept: existing deployments are not touched.
    reconcile = env.deployment("reconcile-runs/svrctl")
    assert reconcile is not None
    schedule_id = reconcile.schedules[0].id

    async def change(client: PrefectClient) -> None:
        await client.update_deployment_schedule(reconcile.id, schedule_id, active=False)

    env.call(change)
    assert asyncio.run(ensure_maintenance_deployments(POOL)) == []
    again = env.deployment("reconcile-runs/svrctl")
    assert again is not None
    assert again.id == reconcile.id
    assert [(s.id, s.active) for s in again.schedules] == [(schedule_id, False)]


# ----------------------------------------------------------------------------- svrctl sync


def test_svrctl_sync_leaves_them_alone(env: Env) -> None:
    env.deploy_all()
    before = {name: env.deployment(name) for name in NAMES}

    # A run-task deployment that svrctl manages but no task wants: a full sync deletes it.
    async def stray(client: PrefectClient) -> Any:
        flow_id = await client.create_flow_from_name("run-task")
        return await client.create_deployment(
            flow_id=flow_id,
            name="no-such-task-prefect-yaml",
            entrypoint=RUN_TASK_ENTRYPOINT,
            parameters={"task_id": 999999},
            work_pool_name=POOL,
            tags=[MANAGED_TAG],
        )

    env.call(stray)
    with env.db.write() as s:
        add_task(s, TaskSpec(name="yaml-kept", kind="local", command="true", timezone="UTC"))

    r = env.run(str(BIN / "svrctl"), "sync")
    assert r.returncode == 0, r.stdout + r.stderr
    assert env.deployment("run-task/no-such-task-prefect-yaml") is None  # sync did delete
    assert env.deployment("run-task/yaml-kept") is not None  # and create
    for name, old in before.items():
        now = env.deployment(name)
        assert now is not None, f"svrctl sync deleted {name}"
        assert old is not None
        assert now.id == old.id
        assert summary(now) == summary(old)

    r = env.run(str(BIN / "svrctl"), "sync", "--dry-run", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "history-retention" not in r.stdout
    assert "reconcile-runs" not in r.stdout


# ----------------------------------------------------------------------------- a real worker


def _history(db: Database) -> tuple[int, int, int]:
    """An old finished row, a recent finished row and a row left running by a dead run."""
    with db.write() as s:
        spec = TaskSpec(name="yaml-history", kind="local", command="true", timezone="UTC")
        task_id = add_task(s, spec).id

    def begin(flow_run_id: str | None) -> int:
        ids = begin_attempt(
            db, task_id, servers=[None], attempt=1, triggered_by="manual", flow_run_id=flow_run_id
        )
        assert isinstance(ids, list)
        return ids[0]

    old, recent = begin(None), begin(None)
    for row_id in (old, recent):
        finish_attempt(db, row_id, Outcome(status=RunStatus.SUCCESS, exit_code=0))
    with db.write() as s:
        row = s.get(TaskHistory, old)
        assert row is not None
        row.started_at = row.finished_at = utcnow() - timedelta(days=45)
    # the flow run of this row does not exist in Prefect: reconciliation crashes the row
    dead = begin("00000000-0000-4000-8000-000000000001")
    return old, recent, dead


def _status(db: Database, row_id: int) -> str | None:
    with db.read() as s:
        row = s.get(TaskHistory, row_id)
        return None if row is None else row.status


def test_each_maintenance_deployment_runs_on_a_svrctl_worker(env: Env) -> None:
    env.deploy_all()
    old, recent, dead = _history(env.db)

    log = env.tmp / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "svrctl"), "worker", "--pool", POOL, "--name", "prefect-yaml-test"],
            env=env.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        runs = {}
        for name in SCHEDULED:
            r = env.run(str(BIN / "prefect"), "deployment", "run", name, timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr
            runs[name] = _run_id(r.stdout)
        for name, run_id in runs.items():
            final = _wait_final(env, run_id, worker, log)
            assert final.state is not None
            assert final.state.type.value == "COMPLETED", (name, final.state, log.read_text())
    finally:
        stop_groups([worker], timeout=60)

    assert _status(env.db, old) is None  # older than 30 days: deleted
    assert _status(env.db, recent) == "success"  # kept
    assert _status(env.db, dead) == "crashed"  # reconciled


def _run_id(output: str) -> UUID:
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, output
    return UUID(match.group(1))


def _wait_final(env: Env, run_id: UUID, worker: subprocess.Popen[bytes], log: Path) -> FlowRun:
    deadline = time.monotonic() + 120
    while True:
        run = env.call(lambda c: c.read_flow_run(run_id))
        if run.state is not None and run.state.type.value in FINAL:
            return run
        assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"still {run.state_name}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
