"""Every row of the bad-input table (bad_inputs.py), run against the real thing.

CLI rows run through click's runner on SQLite and PostgreSQL (and the rows marked
``end_to_end`` again as a real ``svrctl`` process); key-file rows connect to the
real sshd; flow rows create a flow run of the task's ``run-task`` deployment
through the Prefect API, as a Custom run in Prefect's UI does, and run it with
Prefect's flow engine. Each checks the answer (message, what to do, exit code or
final state), that no traceback was printed, and that nothing was written.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from bad_inputs import DOC_PATH, ROWS, Row, markdown
from click.testing import Result
from conftest import Invoke
from sqlalchemy import func, select

from svrctl import runtime
from svrctl.db.engine import Database
from svrctl.db.models import NotifyChannel, Server, Task, TaskHistory
from svrctl.notify.channels import channel_to_dict
from svrctl.servers import server_spec
from svrctl.tasks import task_spec

REPO = Path(__file__).resolve().parents[2]
SVRCTL = Path(sys.executable).parent / "svrctl"
CLI_ROWS = [r for r in ROWS if r.entry != "flow"]
FLOW_ROWS = [r for r in ROWS if r.entry == "flow"]
# A refused value leaves the app database as it was; these rows are runs that fail.
RUNS = {"plugin-stored-config-run", "flow-stored-config"}


def _ids(rows: list[Row]) -> list[Any]:
    return [pytest.param(r, id=r.id) for r in rows]


class World:
    """One row's setup: the CLI, the app database and a scratch directory."""

    def __init__(self, svrctl: Invoke, db: Database, scratch: Path) -> None:
        self.svrctl = svrctl
        self.db = db
        self.scratch = scratch
        self.ids: dict[str, int] = {}

    def ok(self, *args: str) -> Result:
        result = self.svrctl(*args)
        assert result.exit_code == 0, (args, result.output)
        return result

    def sub(self, text: str) -> str:
        """Put the scratch directory in for ``$TMP``."""
        return text.replace("$TMP", str(self.scratch))

    def prepare(self, row: Row, request: pytest.FixtureRequest) -> None:
        steps = set(row.setup)
        if steps & {"s1", "t1"}:
            self.ok("server", "add", "s1", "--host", "192.0.2.10", "--user", "admin")
        if "t1" in steps:
            self.ids["t1"] = self._task("t1", "--server", "s1", "--command", "true")
        if "n1" in steps:
            self.ok(
                "notify", "add", "n1", "--kind", "ntfy", "--url", "http://127.0.0.1:9",
                "--topic", "alerts",
            )  # fmt: skip
        if "sshd" in steps:
            self._sshd_server(row, request)
        if "bad-config" in steps:
            self.ids["p1"] = self._task("p1", "--plugin", "health")
            # As an older svrctl or an older plugin version could have left it.
            with self.db.write() as session:
                task = session.get(Task, self.ids["p1"])
                assert task is not None
                task.plugin_config = {"cpu_percent": 500}

    def _task(self, name: str, *options: str) -> int:
        data = json.loads(self.ok("task", "add", name, *options, "--json").stdout)
        return int(data["id"])

    def _sshd_server(self, row: Row, request: pytest.FixtureRequest) -> None:
        sshd = request.getfixturevalue("sshd")
        home = Path(os.environ["SVRCTL_HOME"])
        home.mkdir(mode=0o700, exist_ok=True)
        (home / "known_hosts").write_text(sshd.host_key_line + "\n")
        (home / "known_hosts").chmod(0o600)
        key = self.scratch / "key"
        if row.key_file == "malformed":
            key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
            key.chmod(0o600)
        elif row.key_file == "open":
            shutil.copyfile(sshd.user_key, key)
            key.chmod(0o644)
        else:
            assert row.key_file == "missing"
        self.ok(
            "server", "add", "k1", "--host", sshd.host, "--port", str(sshd.port),
            "--user", sshd.username, "--key", str(key), "--connect-timeout", "5",
        )  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """What a person configured: servers, tasks and channels (not run statistics)."""
        with self.db.read() as session:
            servers = session.scalars(select(Server).order_by(Server.id))
            tasks = session.scalars(select(Task).order_by(Task.id))
            channels = session.scalars(select(NotifyChannel).order_by(NotifyChannel.id))
            return {
                "servers": [server_spec(session, s).model_dump() for s in servers],
                "tasks": [(t.id, t.plugin_config, task_spec_or_raw(session, t)) for t in tasks],
                "channels": [channel_to_dict(c) for c in channels],
            }

    def history_rows(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(TaskHistory)) or 0)


def task_spec_or_raw(session: Any, task: Task) -> Any:
    """The task's spec; a stored config that no longer validates is kept as it is."""
    try:
        return task_spec(session, task).model_dump()
    except Exception:
        return task.name


@pytest.fixture
def world(svrctl: Invoke, database: Database, tmp_path: Path) -> World:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    runtime.reset()
    return World(svrctl, database, scratch)


def check_answer(row: Row, world: World, text: str) -> None:
    """The message says what and why, and what to do; no traceback; short."""
    assert world.sub(row.message) in text, (row.id, text[-3000:])
    assert world.sub(row.hint) in text, (row.id, text[-3000:])
    assert "Traceback" not in text, (row.id, text[-3000:])
    assert len(text) < 2000, (row.id, len(text), text[:500])


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("row", _ids(CLI_ROWS))
def test_cli_row(
    row: Row, world: World, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "bad-config" in row.setup:
        request.getfixturevalue("prefect_api")  # `task run` runs the flow in this process
    else:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    world.prepare(row, request)
    before, runs = world.snapshot(), world.history_rows()

    result = world.svrctl(*(world.sub(a) for a in row.argv))

    assert result.exit_code == row.exit_code, (row.id, result.output[-3000:])
    check_answer(row, world, result.stderr + result.stdout)
    assert world.snapshot() == before, row.id
    if row.id not in RUNS:
        assert world.history_rows() == runs, row.id
    else:
        assert world.history_rows() == runs + 1, row.id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("row", _ids([r for r in CLI_ROWS if r.end_to_end]))
def test_cli_row_as_a_process(
    row: Row, world: World, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    world.prepare(row, request)
    before = world.snapshot()

    done = subprocess.run(
        [str(SVRCTL), *(world.sub(a) for a in row.argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )

    assert done.returncode == row.exit_code, (row.id, done.stdout, done.stderr[-3000:])
    check_answer(row, world, done.stderr + done.stdout)
    assert world.snapshot() == before, row.id


# ----------------------------------------------------------------------------- the flow


def _flow_params(row: Row, world: World) -> dict[str, Any]:
    names = {"$TASK": "t1", "$P1": "p1"}
    return {k: world.ids[names[v]] if v in names else v for k, v in row.params.items()}


@pytest.mark.parametrize("row", _ids(FLOW_ROWS))
def test_flow_row(row: Row, world: World, request: pytest.FixtureRequest) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.flow_engine import run_flow_async

    from svrctl.flows.run_task import run_task

    request.getfixturevalue("prefect_api")
    world.prepare(row, request)
    with world.db.read() as session:
        task = session.get(Task, world.ids["t1"])
        assert task is not None and task.deployment_id, "the automatic sync made no deployment"
        deployment_id = UUID(task.deployment_id)
    before, runs = world.snapshot(), world.history_rows()
    params = _flow_params(row, world)

    with get_client(sync_client=True) as client:
        by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        existing = len(client.read_flow_runs(deployment_filter=by_deployment))
        try:
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=params)
        except PrefectHTTPStatusError as exc:
            assert row.state == "Refused", (row.id, exc.response.text)
            assert exc.response.status_code == 409, exc.response.text
            check_answer(row, world, exc.response.json()["detail"])
            assert len(client.read_flow_runs(deployment_filter=by_deployment)) == existing
            assert world.snapshot() == before and world.history_rows() == runs
            return
        assert row.state != "Refused", (row.id, "Prefect created the flow run")

        state = asyncio.run(
            run_flow_async(run_task, flow_run=flow_run, parameters=params, return_type="state")
        )
        final = client.read_flow_run(flow_run.id).state
        assert final is not None and state is not None
        assert final.name == row.state, (row.id, final)
        check_answer(row, world, final.message or "")
        # The engine sends its logs in the background: wait for the reason to arrive.
        deadline = time.monotonic() + 30
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
            )
            text = "\n".join(log.message for log in logs)
            if world.sub(row.message) in text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert world.sub(row.message) in text, (row.id, text[-3000:])
    assert "Traceback" not in text, (row.id, text[-3000:])
    assert world.snapshot() == before, row.id
    assert world.history_rows() == runs + (1 if row.id in RUNS else 0), row.id


# ----------------------------------------------------------------------------- the doc


def test_the_doc_is_made_from_the_table() -> None:
    doc = (REPO / DOC_PATH).read_text()
    assert doc == markdown(), (
        f"{DOC_PATH} differs from tests/reliability/bad_inputs.py: run "
        f"`python -m tests.reliability.bad_inputs --markdown > {DOC_PATH}`"
    )


def test_the_table_covers_every_entry_point_and_case() -> None:
    entries = {r.entry for r in ROWS}
    assert entries == {"cli", "server", "task", "cron", "plugin", "notify", "flow"}
    assert len({r.id for r in ROWS}) == len(ROWS)
    cases = " ".join(r.case for r in ROWS)
    for needle in ("empty", "characters", "unicode", "newline", "shell metacharacters",
                   "does not exist", "removed", "not a key", "0644", "wrong type"):  # fmt: skip
        assert needle in cases, needle
    assert any(r.entry == "flow" and r.params.get("task_id") == 999_999 for r in ROWS)
    assert all(r.message and r.hint for r in ROWS)
