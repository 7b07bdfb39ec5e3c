"""Reconciling history rows left ``running`` by a process that died, and purging old history.

The unit tests drive ``reconcile_running`` with a fake Prefect; the last tests kill a
real worker process (``kill -9``) in the middle of a run and let the
``reconcile-runs`` flow clean up after it through the real Prefect API.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from fixtures.runenv import RunEnv

from svrctl.db.models import RunStatus, TaskHistory, utcnow
from svrctl.execution.history import Outcome, begin_attempt, finish_attempt
from svrctl.execution.reconcile import purge_history, reconcile_running

pytestmark = pytest.mark.sshd


class FakePrefect:
    """Answers ``state_of`` from a table of flow run states, and counts the questions."""

    def __init__(self, states: dict[str, str | None]) -> None:
        self.states = states
        self.asked: list[UUID] = []

    async def __call__(self, flow_run_id: UUID) -> str | None:
        self.asked.append(flow_run_id)
        return self.states.get(str(flow_run_id))


def running(env: RunEnv, task_id: int, flow_run_id: str | None, *servers: str) -> list[int]:
    """Insert running rows as a run that is still going would have them."""
    ids = begin_attempt(
        env.db,
        task_id,
        servers=list(servers or ["s1"]),
        attempt=1,
        triggered_by="manual",
        flow_run_id=flow_run_id,
    )
    assert isinstance(ids, list)
    return ids


def row(env: RunEnv, row_id: int) -> TaskHistory:
    with env.db.read() as session:
        found = session.get(TaskHistory, row_id)
        assert found is not None
        return found


# ----------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("COMPLETED", "crashed"),
        ("FAILED", "crashed"),
        ("CRASHED", "crashed"),
        ("CANCELLED", "cancelled"),
        (None, "crashed"),
        ("RUNNING", "running"),
        ("PENDING", "running"),
        ("SCHEDULED", "running"),
        ("PAUSED", "running"),
        ("CANCELLING", "running"),
    ],
)
def test_reconcile_by_flow_run_state(run_env: RunEnv, state: str | None, expected: str) -> None:
    task_id = run_env.add_task("t", "--local", "--command", "true")
    run_id = str(uuid.uuid4())
    (row_id,) = running(run_env, task_id, run_id)
    prefect = FakePrefect({run_id: state})

    changed = asyncio.run(reconcile_running(run_env.db, prefect))

    assert prefect.asked == [UUID(run_id)]
    after = row(run_env, row_id)
    assert after.status == expected
    task = run_env.task(task_id)
    if expected == "running":
        assert changed == []
        assert after.finished_at is None
        assert task.run_count == 0
        return
    assert changed == [row_id]
    assert after.success is False
    assert after.finished_at is not None and after.duration_ms is not None
    assert after.error is not None
    assert after.error.startswith(f"{expected}: ")
    assert ("no longer exists" if state is None else f"ended {state}") in after.error
    assert (task.run_count, task.success_count, task.last_status) == (1, 0, expected)
    assert task.failure_count == (1 if expected == "crashed" else 0)


def test_fan_out_run_is_counted_once(run_env: RunEnv) -> None:
    task_id = run_env.add_task("t", "--local", "--command", "true")
    run_id = str(uuid.uuid4())
    ids = running(run_env, task_id, run_id, "a", "b", "c")
    prefect = FakePrefect({run_id: "CRASHED"})

    changed = asyncio.run(reconcile_running(run_env.db, prefect))

    assert sorted(changed) == sorted(ids)
    assert prefect.asked == [UUID(run_id)]  # one question per flow run
    assert {row(run_env, i).status for i in ids} == {"crashed"}
    task = run_env.task(task_id)
    assert (task.run_count, task.failure_count) == (1, 1)

    # a second pass finds nothing left and counts nothing again
    assert asyncio.run(reconcile_running(run_env.db, prefect)) == []
    task = run_env.task(task_id)
    assert (task.run_count, task.failure_count) == (1, 1)


def test_two_dead_runs_count_twice(run_env: RunEnv) -> None:
    task_id = run_env.add_task("t", "--local", "--command", "true")
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    running(run_env, task_id, one)
    running(run_env, task_id, two)
    changed = asyncio.run(reconcile_running(run_env.db, FakePrefect({one: "FAILED"})))
    assert len(changed) == 2
    assert run_env.task(task_id).run_count == 2


def test_rows_without_flow_run_or_with_a_bad_id(run_env: RunEnv) -> None:
    task_id = run_env.add_task("t", "--local", "--command", "true")
    (in_process,) = running(run_env, task_id, None)
    (bad,) = running(run_env, task_id, "not-a-uuid")
    prefect = FakePrefect({})

    changed = asyncio.run(reconcile_running(run_env.db, prefect))

    assert changed == [bad]
    assert prefect.asked == []
    assert row(run_env, bad).status == "crashed"
    # a run without a flow run (execute_task called directly) is not Prefect's to judge
    assert row(run_env, in_process).status == "running"


def test_row_finished_meanwhile_is_left_alone(run_env: RunEnv) -> None:
    task_id = run_env.add_task("t", "--local", "--command", "true")
    run_id = str(uuid.uuid4())
    (row_id,) = running(run_env, task_id, run_id)

    async def finishes_first(flow_run_id: UUID) -> str | None:
        # the run finishes its row while reconcile is asking Prefect about it
        finish_attempt(run_env.db, row_id, Outcome(RunStatus.SUCCESS, exit_code=0))
        return "COMPLETED"

    assert asyncio.run(reconcile_running(run_env.db, finishes_first)) == []
    assert row(run_env, row_id).status == "success"
    assert run_env.task(task_id).run_count == 0


def test_purge_history_keeps_recent_and_running_rows(run_env: RunEnv) -> None:
    task_id = run_env.add_task("t", "--local", "--command", "true")
    ids = running(run_env, task_id, None, "old-done", "old-running", "new-done", "old-done-2")
    old = utcnow() - timedelta(days=40)
    with run_env.db.write() as session:
        for row_id in ids:
            found = session.get(TaskHistory, row_id)
            assert found is not None
            if found.server_name != "new-done":
                found.started_at = old
            if found.server_name != "old-running":
                found.status = "success"
    assert purge_history(run_env.db, 30, batch=1) == 2
    left = sorted(r.server_name or "" for r in run_env.rows(task_id))
    assert left == ["new-done", "old-running"]
    assert purge_history(run_env.db, 30) == 0


# ----------------------------------------------------------------------------- a killed worker

WORKER = (
    "import asyncio, sys\n"
    "from svrctl.flows.run_task import run_task\n"
    "asyncio.run(run_task(task_id=int(sys.argv[1])))\n"
)


@pytest.fixture
def env(prefect_api: str, run_env: RunEnv) -> RunEnv:
    """``run_env`` with the session's Prefect test server up (``PREFECT_API_URL`` set)."""
    return run_env


def start_worker(env: RunEnv, task_id: int, log: Path) -> subprocess.Popen[bytes]:
    """Run the flow for ``task_id`` in another Python process, as a worker would."""
    assert os.environ.get("PREFECT_API_URL")
    assert os.environ.get("SVRCTL_DATABASE_URL")
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, str(task_id)],
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_running_with_flow_run(
    env: RunEnv, task_id: int, worker: subprocess.Popen[bytes], log: Path
) -> TaskHistory:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = [r for r in env.rows(task_id) if r.status == "running" and r.flow_run_id]
        if rows:
            return rows[0]
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited early:\n{log.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"no running row with a flow run id:\n{log.read_text()}")


def kill(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(30)


async def set_crashed(flow_run_id: str) -> None:
    from prefect import get_client
    from prefect.states import Crashed

    async with get_client() as client:
        await client.set_flow_run_state(
            flow_run_id, Crashed(message="the worker process died"), force=True
        )


async def delete_flow_run(flow_run_id: str) -> None:
    from prefect import get_client

    async with get_client() as client:
        await client.delete_flow_run(UUID(flow_run_id))


async def flow_run_state(flow_run_id: str) -> str | None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            run = await client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return None
    return run.state.type.value if run.state else None


def reconcile() -> int:
    from svrctl.flows.maintenance import reconcile_runs

    changed = asyncio.run(reconcile_runs())
    assert isinstance(changed, int)
    return changed


def test_killed_runs_are_reconciled(env: RunEnv, tmp_path: Path) -> None:
    env.add_server("s1")
    crashed_id = env.add_task("dies-crashed", "--server", "s1", "--command", "sleep 321")
    deleted_id = env.add_task("dies-deleted", "--server", "s1", "--command", "sleep 322")
    workers = []
    try:
        crashed_log, deleted_log = tmp_path / "crashed.log", tmp_path / "deleted.log"
        workers.append(start_worker(env, crashed_id, crashed_log))
        workers.append(start_worker(env, deleted_id, deleted_log))
        first = wait_running_with_flow_run(env, crashed_id, workers[0], crashed_log)
        second = wait_running_with_flow_run(env, deleted_id, workers[1], deleted_log)
        for worker in workers:
            kill(worker)
        assert first.flow_run_id and second.flow_run_id
        assert asyncio.run(flow_run_state(first.flow_run_id)) == "RUNNING"

        # Prefect's zombie automation marks the first flow run Crashed; the second is
        # still Running as far as Prefect knows, so its row is left alone.
        asyncio.run(set_crashed(first.flow_run_id))
        assert reconcile() == 1
        crashed = row(env, first.id)
        assert crashed.status == "crashed"
        assert crashed.error is not None and "ended CRASHED" in crashed.error
        assert crashed.finished_at is not None
        assert row(env, second.id).status == "running"
        task = env.task(crashed_id)
        assert (task.run_count, task.failure_count, task.last_status) == (1, 1, "crashed")
        assert env.task(deleted_id).run_count == 0

        # again: nothing changes, nothing is counted twice
        assert reconcile() == 0
        assert env.task(crashed_id).run_count == 1

        # the second flow run disappears from Prefect
        asyncio.run(delete_flow_run(second.flow_run_id))
        assert asyncio.run(flow_run_state(second.flow_run_id)) is None
        assert reconcile() == 1
        gone = row(env, second.id)
        assert gone.status == "crashed"
        assert gone.error is not None and "no longer exists" in gone.error
        task = env.task(deleted_id)
        assert (task.run_count, task.failure_count, task.last_status) == (1, 1, "crashed")
        assert env.task(crashed_id).run_count == 1
    finally:
        for worker in workers:
            kill(worker)
        env.sshd.run("pkill -KILL -f '^sleep 32[12]$'")
