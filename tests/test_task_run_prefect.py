"""``svrctl task run NAME --at WHEN`` and ``--via-prefect``: one-off runs through Prefect.

End to end: a real `prefect server start` (with its scheduler), the task's deployment
made by svrctl's own automatic sync, a real svrctl worker subprocess on a fresh work
pool, the real sshd, and the history rows in the app database.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from click.testing import Result
from fixtures.sshd import free_port
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from sqlalchemy import select
from test_worker import BIN, World, unique, world

from svrctl.db.models import Server, Task
from svrctl.execution.engine import TaskExecutionResult

__all__ = ["world"]  # the fixture, shared with test_worker.py

pytestmark = pytest.mark.sshd


def add_task(w: World, *options: str) -> tuple[str, int]:
    """Add a task on the test sshd and give it a deployment on ``w.pool``; return name, id.

    The deployment is made as `svrctl sync` makes it (same flow, entrypoint and
    parameters) and recorded in the task's row, as sync records it.
    """
    env = w.env
    with env.db.read() as session:
        if session.scalar(select(Server.id).where(Server.name == "target")) is None:
            env.add_server("target")
    name = unique("job")
    task_id = env.add_task(name, "--server", "target", *options)
    _, deployment_id = w.deploy(task_id)
    with env.db.write() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.deployment_id = str(deployment_id)
    return name, task_id


def deployment_runs(w: World, task_id: int) -> list[object]:
    deployment_id = w.env.task(task_id).deployment_id
    assert deployment_id
    return list(
        w.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)]))
        )
    )


def run_id_in(text: str) -> UUID:
    match = re.search(r"runs/flow-run/([0-9a-f-]{36})", text)
    assert match, text
    return UUID(match.group(1))


def refused(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


# ----------------------------------------------------------------------------- --at


def test_at_run_fires_at_its_time(world: World) -> None:
    name, task_id = add_task(world, "--command", "echo at-run")
    world.start_worker()
    before = datetime.now(UTC)
    result = world.env.svrctl("task", "run", name, "--at", "now+8s", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    due = datetime.fromisoformat(data["scheduled_at"])
    assert before + timedelta(seconds=7) <= due <= datetime.now(UTC) + timedelta(seconds=8)
    assert data["deployment_id"] == world.env.task(task_id).deployment_id
    assert data["work_pool"] == world.pool
    assert (
        data["ui_url"]
        == f"{world.server.api_url.removesuffix('/api')}/runs/flow-run/" + (data["flow_run_id"])
    )

    run_id = UUID(data["flow_run_id"])
    run = world.flow_run(run_id)
    assert run.state is not None and run.state.type.value == "SCHEDULED"
    assert run.expected_start_time == due
    assert run.parameters == {"task_id": task_id, "force": False}
    assert world.env.rows(task_id) == []  # nothing ran yet

    (row,) = world.wait_rows(task_id, timeout=40)
    late = (row.started_at - due).total_seconds()
    print(f"\n--at run: history row started {late:+.2f} s from its time")
    assert 0 <= late <= 2.0
    assert (row.flow_run_id, row.status, row.triggered_by, row.output) == (
        str(run_id),
        "success",
        "api",
        "at-run\n",
    )
    run = world.wait_final(run_id)
    assert run.state is not None and run.state.type.value == "COMPLETED"
    assert run.start_time is not None
    print(f"--at run: flow run started {(run.start_time - due).total_seconds():+.2f} s late")
    assert timedelta(0) <= run.start_time - due <= timedelta(seconds=1)


def test_at_naive_time_is_in_the_task_zone_or_tz(world: World) -> None:
    name, task_id = add_task(world, "--command", "true", "--timezone", "America/New_York")

    result = world.env.svrctl("task", "run", name, "--at", "2099-07-01 03:00")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"✓ scheduled a run of task {name} for 2099-07-01 03:00:00 EDT (2099-07-01 07:00:00 UTC)"
    )
    run = world.flow_run(run_id_in(result.stdout))
    assert run.expected_start_time == datetime(2099, 7, 1, 7, 0, tzinfo=UTC)
    assert run.state is not None and run.state.type.value == "SCHEDULED"

    result = world.env.svrctl(
        "task", "run", name, "--at", "2099-07-01 03:00:30", "--tz", "Asia/Tokyo", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scheduled_at"] == "2099-06-30T18:00:30+00:00"
    assert data["scheduled_at_local"] == "2099-06-30T14:00:30-04:00"  # the task's zone
    run = world.flow_run(UUID(data["flow_run_id"]))
    assert run.expected_start_time == datetime(2099, 6, 30, 18, 0, 30, tzinfo=UTC)

    # an offset wins over both zones, and --force reaches the flow's parameters
    result = world.env.svrctl(
        "task", "run", name, "--at", "2099-01-02T03:04:05+01:00", "--force", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    run = world.flow_run(UUID(data["flow_run_id"]))
    assert run.expected_start_time == datetime(2099, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert run.parameters == {"task_id": task_id, "force": True}
    assert len(deployment_runs(world, task_id)) == 3


def test_at_refuses_past_and_garbage_times(world: World) -> None:
    name, task_id = add_task(world, "--command", "true", "--timezone", "Europe/Berlin")
    run = world.env.svrctl
    refused(run("task", "run", name, "--at", "2020-01-01 00:00"), "--at", "in the past")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    refused(run("task", "run", name, "--at", past), "--at", "in the past")
    refused(run("task", "run", name, "--at", "tomorrow 3am"), "--at", "is not a time")
    refused(run("task", "run", name, "--at", "2099-13-01 03:00"), "--at", "not a valid time")
    # 02:30 does not exist in Berlin on the night clocks go forward
    refused(run("task", "run", name, "--at", "2099-03-29 02:30"), "--at", "does not exist")
    refused(run("task", "run", name, "--at", "2099-01-01 03:00", "--tz", "Mars/Base"), "--tz")
    refused(run("task", "run", name, "--tz", "UTC"), "--tz applies only with --at")
    assert deployment_runs(world, task_id) == []
    assert world.env.rows(task_id) == []


# ----------------------------------------------------------------------------- --via-prefect


def test_via_prefect_success_failure_and_json(world: World) -> None:
    good, good_id = add_task(world, "--command", "echo hello; echo world")
    bad, bad_id = add_task(world, "--command", "echo partial; echo broken >&2; exit 3")
    world.start_worker()

    result = world.env.svrctl("task", "run", good, "--via-prefect")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"✓ success in \d+ ms", lines[0]), lines
    assert lines[1:] == ["hello", "world"]
    run_id = run_id_in(result.stderr)
    assert "flow run " in result.stderr and str(run_id) in result.stderr
    assert "warning" not in result.stderr  # a worker polls the pool
    (row,) = world.env.rows(good_id)
    assert (row.flow_run_id, row.triggered_by, row.status) == (str(run_id), "api", "success")
    run = world.flow_run(run_id)
    assert run.state is not None and run.state.type.value == "COMPLETED"

    result = world.env.svrctl("task", "run", bad, "--via-prefect")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"✗ failed after \d+ ms: .*exit code 3.*", lines[0]), lines
    assert "partial" in lines[1:]
    (row,) = world.env.rows(bad_id)
    assert (row.flow_run_id, row.status) == (str(run_id_in(result.stderr)), "failed")

    result = world.env.svrctl("task", "run", bad, "--via-prefect", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert set(data) == set(TaskExecutionResult.model_fields) | {"flow_run_id"}
    assert (data["success"], data["status"], data["exit_code"], data["task_id"]) == (
        False,
        "failed",
        3,
        bad_id,
    )
    assert data["flow_run_id"] == str(run_id_in(result.stderr))
    rows = [r for r in world.env.rows(bad_id) if r.flow_run_id == data["flow_run_id"]]
    assert data["history_ids"] == [r.id for r in rows] and len(rows) == 1

    # a disabled task is refused by the run, unless --force reaches it
    with world.env.db.write() as session:
        task = session.get(Task, good_id)
        assert task is not None
        task.enabled = False
        deployment_id = UUID(task.deployment_id or "")
    world.client.pause_deployment(deployment_id)  # as sync leaves a disabled task's
    result = world.env.svrctl("task", "run", good, "--via-prefect")
    assert result.exit_code == 1, result.output
    assert re.match(rf"✗ cancelled after \d+ ms: task {good} is disabled", result.stdout)
    result = world.env.svrctl("task", "run", good, "--via-prefect", "--force")
    assert result.exit_code == 0, result.output
    assert world.env.rows(good_id)[-1].status == "success"


def test_via_prefect_without_a_worker_warns_and_times_out(world: World) -> None:
    name, task_id = add_task(world, "--command", "true")
    started = time.monotonic()
    result = world.env.svrctl("task", "run", name, "--via-prefect", "--wait-timeout", "4")
    assert result.exit_code == 3, result.output
    assert 4 <= time.monotonic() - started < 20
    assert f"no worker polls the work pool {world.pool}" in result.stderr
    assert f"waiting for a worker on pool {world.pool}" in result.stderr
    assert "goes on in Prefect" in result.stderr
    run_id = run_id_in(result.stderr)
    run = world.flow_run(run_id)
    assert run.state is not None and run.state.type.value == "SCHEDULED"
    assert world.env.rows(task_id) == []
    world.client.delete_flow_run(run_id)


def test_via_prefect_ctrl_c_leaves_the_run_to_prefect(world: World) -> None:
    name, task_id = add_task(world, "--command", "true")
    err = world.logs / "cli.err"
    with err.open("wb") as stderr:
        cli = subprocess.Popen(
            [str(BIN / "svrctl"), "task", "run", name, "--via-prefect"],
            env=os.environ | {"PREFECT_API_URL": world.server.api_url},
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while "created:" not in err.read_text():
            assert cli.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        cli.send_signal(signal.SIGINT)
        out, _ = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    text = err.read_text()
    assert cli.returncode == 130, text
    assert "interrupted: stopped waiting" in text and "goes on in Prefect" in text, text
    assert "Traceback" not in text and out == b""
    run_id = run_id_in(text)
    assert f"prefect flow-run inspect {run_id}" in text
    run = world.flow_run(run_id)
    assert run.state is not None and run.state.type.value == "SCHEDULED"
    assert world.env.rows(task_id) == []
    world.client.delete_flow_run(run_id)


# ----------------------------------------------------------------------------- no way through


def test_no_api_or_no_deployment_exits_2(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    env = world.env
    dead = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", dead)
    name = unique("offline")
    env.ok("task", "add", name, "--local", "--command", "true")  # saved, not synced
    for options in (["--via-prefect"], ["--at", "now+1h"]):
        result = env.svrctl("task", "run", name, *options)
        refused(result, f"the Prefect API at {dead} does not answer", "svrctl up")

    monkeypatch.setenv("PREFECT_API_URL", world.server.api_url)
    for options in (["--via-prefect"], ["--at", "now+1h"]):
        result = env.svrctl("task", "run", name, *options)
        refused(result, f"task {name} has no Prefect deployment yet", "run `svrctl sync`")
    assert env.rows(int(json.loads(env.ok("task", "show", name, "--json"))["id"])) == []
