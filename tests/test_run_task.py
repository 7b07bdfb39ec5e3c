"""The ``run-task`` flow through a real Prefect API, against the real sshd.

Each test checks the app database (history rows, task stats), the host behind
sshd (files, processes) and Prefect (flow run state, name, logs, artifacts).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from uuid import UUID

import pytest
from fixtures.runenv import RunEnv
from fixtures.sshd import free_port
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun, Log, State

from svrctl.db.models import utcnow
from svrctl.execution.engine import TaskExecutionResult
from svrctl.flows.run_task import run_task

pytestmark = pytest.mark.sshd


@pytest.fixture
def env(prefect_api: str, run_env: RunEnv) -> RunEnv:
    """``run_env`` with the session's Prefect test server up (``PREFECT_API_URL`` set)."""
    return run_env


def unique(prefix: str) -> str:
    """A task name no other test uses: the Prefect server is shared by the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_flow(task_id: int, force: bool = False) -> tuple[State[Any], TaskExecutionResult]:
    """Run the flow in this process and return its final state and result."""
    state = asyncio.run(run_task(task_id=task_id, force=force, return_state=True))
    result = state.result(raise_on_failure=False)
    assert isinstance(result, TaskExecutionResult), result
    return state, result


def flow_run_id(state: State[Any]) -> UUID:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def read_flow_run(run_id: UUID) -> FlowRun:
    async def read() -> FlowRun:
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    return asyncio.run(read())


def read_logs(run_id: UUID, wanted: list[str], timeout: float = 15.0) -> list[str]:
    """Return the flow run's log messages once all of ``wanted`` are there (or at timeout)."""

    async def read() -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with get_client() as client:
            while True:
                logs: list[Log] = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
                )
                messages = [log.message for log in logs]
                if all(w in messages for w in wanted) or loop.time() > deadline:
                    return messages
                await asyncio.sleep(0.5)

    return asyncio.run(read())


def read_artifacts(run_id: UUID, key: str | None = None) -> list[Artifact]:
    async def read() -> list[Artifact]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                    key=ArtifactFilterKey(any_=[key]) if key else None,
                )
            )

    return asyncio.run(read())


# ----------------------------------------------------------------------------- outcomes


def test_success_over_ssh(env: RunEnv) -> None:
    env.add_server("s1")
    name = unique("hello")
    marker = env.scratch / "ran"
    task_id = env.add_task(
        name, "--server", "s1", "--command", f"echo hello; echo world; touch {marker}"
    )
    before = utcnow()
    state, result = run_flow(task_id)
    after = utcnow()

    assert (result.success, result.status, result.exit_code) == (True, "success", 0)
    assert (result.output, result.error, result.task_name) == ("hello\nworld\n", None, name)
    assert result.attempts == 1
    assert marker.exists()

    run_id = flow_run_id(state)
    (row,) = env.rows(task_id)
    assert result.history_ids == [row.id]
    assert row.flow_run_id == str(run_id)
    assert (row.server_name, row.attempt, row.triggered_by) == ("s1", 1, "manual")
    assert (row.status, row.success, row.exit_code) == ("success", True, 0)
    assert row.output == "hello\nworld\n"
    assert row.finished_at is not None
    assert before <= row.started_at <= row.finished_at <= after
    assert row.duration_ms is not None
    assert 0 < row.duration_ms <= result.duration_ms

    task = env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 1, 0)
    assert task.last_status == "success"
    assert task.last_duration_ms == result.duration_ms
    assert task.last_run_at is not None and before <= task.last_run_at <= after

    run = read_flow_run(run_id)
    assert run.state is not None and run.state.type.value == "COMPLETED"
    assert state.is_completed()
    assert run.name.startswith(f"{name}-")
    assert run.parameters == {"task_id": task_id, "force": False}


def test_nonzero_exit_fails_the_flow_run(env: RunEnv) -> None:
    env.add_server("s1")
    task_id = env.add_task(
        unique("boom"), "--server", "s1", "--command", "echo partial; echo it broke >&2; exit 7"
    )
    state, result = run_flow(task_id)
    assert (result.success, result.status, result.exit_code) == (False, "failed", 7)
    assert result.output == "partial\n"
    assert result.error is not None
    assert "exit code 7" in result.error and "it broke" in result.error

    (row,) = env.rows(task_id)
    assert (row.status, row.success, row.exit_code) == ("failed", False, 7)
    assert row.error == result.error
    assert row.flow_run_id == str(flow_run_id(state))
    task = env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 0, 1)
    assert task.last_status == "failed"

    assert state.is_failed()
    assert state.message is not None and state.message.startswith("failed: exit code 7")
    run = read_flow_run(flow_run_id(state))
    assert run.state is not None and run.state.type.value == "FAILED"


def test_timeout_stops_the_remote_command(env: RunEnv) -> None:
    env.add_server("s1")
    # a foreground sleep and a background one that ignores SIGHUP: neither may survive
    task_id = env.add_task(
        unique("slow"), "--server", "s1", "--timeout", "1",
        "--command", "nohup sleep 312 >/dev/null 2>&1 & sleep 311",
    )  # fmt: skip
    pattern = "^sleep 31[12]$"
    try:
        state, result = run_flow(task_id)
        assert result.status == "timed_out"
        assert not result.success and result.exit_code is None
        assert result.error is not None and "timeout of 1 s" in result.error
        assert result.duration_ms < 15_000
        assert env.wait_no_remote(pattern) == []

        (row,) = env.rows(task_id)
        assert (row.status, row.exit_code) == ("timed_out", None)
        task = env.task(task_id)
        assert (task.failure_count, task.last_status) == (1, "timed_out")
        assert state.is_failed()
        run = read_flow_run(flow_run_id(state))
        assert run.state is not None and run.state.type.value == "FAILED"
    finally:
        env.sshd.run(f"pkill -KILL -f '{pattern}'")


def test_retry_then_success(env: RunEnv) -> None:
    env.add_server("s1")
    marker = env.scratch / "first-attempt-done"
    command = (
        f"if [ -e {marker} ]; then echo second try; "
        f"else touch {marker}; echo first try fails >&2; exit 1; fi"
    )
    task_id = env.add_task(
        unique("flaky"), "--server", "s1", "--retries", "3", "--retry-delay", "0",
        "--command", command,
    )  # fmt: skip
    state, result = run_flow(task_id)
    assert result.success, result.error
    assert (result.attempts, result.output) == (2, "second try\n")

    first, second = env.rows(task_id)
    run_id = str(flow_run_id(state))
    assert (first.attempt, first.triggered_by, first.status, first.exit_code) == (
        1,
        "manual",
        "failed",
        1,
    )
    assert first.error is not None and "first try fails" in first.error
    assert (second.attempt, second.triggered_by, second.status, second.exit_code) == (
        2,
        "retry",
        "success",
        0,
    )
    assert first.flow_run_id == second.flow_run_id == run_id
    task = env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 1, 0)
    assert state.is_completed()


def test_retries_exhausted(env: RunEnv) -> None:
    env.add_server("s1")
    log = env.scratch / "tries"
    task_id = env.add_task(
        unique("hopeless"), "--server", "s1", "--retries", "2", "--retry-delay", "0",
        "--command", f"echo try >> {log}; exit 4",
    )  # fmt: skip
    state, result = run_flow(task_id)
    assert (result.success, result.status, result.exit_code, result.attempts) == (
        False,
        "failed",
        4,
        3,
    )
    rows = env.rows(task_id)
    assert [(r.attempt, r.triggered_by, r.status) for r in rows] == [
        (1, "manual", "failed"),
        (2, "retry", "failed"),
        (3, "retry", "failed"),
    ]
    assert log.read_text().splitlines() == ["try"] * 3
    task = env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 0, 1)
    assert state.is_failed()


def test_disabled_task_is_refused_unless_forced(env: RunEnv) -> None:
    env.add_server("s1")
    marker = env.scratch / "ran"
    name = unique("off")
    task_id = env.add_task(name, "--server", "s1", "--disabled", "--command", f"touch {marker}")

    state, result = run_flow(task_id)
    assert (result.success, result.status) == (False, "cancelled")
    assert result.error is not None
    assert "disabled" in result.error and "force" in result.error
    assert not marker.exists()
    (row,) = env.rows(task_id)
    assert (row.status, row.success, row.error) == ("cancelled", False, result.error)
    assert row.flow_run_id == str(flow_run_id(state))
    assert state.is_failed()
    assert env.task(task_id).run_count == 0  # a refusal is not a run

    state, result = run_flow(task_id, force=True)
    assert result.success, result.error
    assert marker.exists()
    assert [r.status for r in env.rows(task_id)] == ["cancelled", "success"]
    assert env.task(task_id).run_count == 1
    assert state.is_completed()
    assert read_flow_run(flow_run_id(state)).parameters["force"] is True


def test_tag_fan_out_with_one_host_down(env: RunEnv) -> None:
    env.add_server("alpha", "fleet")
    env.add_server("beta", "fleet")
    env.add_server("gamma", "fleet", port=free_port())
    name = unique("fleet")
    task_id = env.add_task(name, "--tag", "fleet", "--command", "echo up")

    state, result = run_flow(task_id)
    assert (result.success, result.status) == (False, "failed")
    assert result.error is not None
    assert result.error.startswith("1 of 3 servers failed (3 needed to succeed): gamma: ")
    assert "alpha" not in result.error and "beta" not in result.error
    rows = env.rows(task_id)
    by_server = {r.server_name: r for r in rows}
    assert sorted(by_server) == ["alpha", "beta", "gamma"]
    assert (by_server["alpha"].status, by_server["alpha"].output) == ("success", "up\n")
    assert by_server["beta"].status == "success"
    assert by_server["gamma"].status == "failed"
    assert by_server["gamma"].error is not None
    assert "connection refused" in by_server["gamma"].error
    assert {r.flow_run_id for r in rows} == {str(flow_run_id(state))}
    assert state.is_failed()

    env.ok("task", "edit", name, "--min-success", "2")
    state, result = run_flow(task_id)
    assert (result.success, result.status, result.error) == (True, "success", None)
    assert "== alpha: success ==\nup" in result.output
    assert "== gamma: failed ==" in result.output
    assert len(env.rows(task_id)) == 6
    task = env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (2, 1, 1)
    assert state.is_completed()


def test_concurrent_flow_runs(env: RunEnv) -> None:
    env.add_server("s1")
    marks = env.scratch / "marks"
    task_id = env.add_task(
        unique("crowd"), "--server", "s1", "--overlap", "queue", "--command", f"echo x >> {marks}"
    )
    count = 20

    async def all_runs() -> list[State[Any]]:
        return list(
            await asyncio.gather(
                *(run_task(task_id=task_id, return_state=True) for _ in range(count))
            )
        )

    states = asyncio.run(all_runs())
    assert all(s.is_completed() for s in states), [s.message for s in states]
    run_ids = {str(flow_run_id(s)) for s in states}
    assert len(run_ids) == count
    rows = env.rows(task_id)
    assert len(rows) == count
    assert {r.flow_run_id for r in rows} == run_ids
    assert {r.status for r in rows} == {"success"}
    assert marks.read_text().splitlines() == ["x"] * count
    task = env.task(task_id)
    assert (task.run_count, task.success_count) == (count, count)


def test_overlapping_flow_runs_of_a_skip_task(env: RunEnv) -> None:
    env.add_server("s1")
    marks = env.scratch / "marks"
    task_id = env.add_task(
        unique("solo"), "--server", "s1", "--overlap", "skip",
        "--command", f"echo ran >> {marks}; sleep 5",
    )  # fmt: skip

    async def both() -> list[State[Any]]:
        first = asyncio.ensure_future(run_task(task_id=task_id, return_state=True))
        # The second run starts only once the first one's row says `running`.
        deadline = time.monotonic() + 60
        while not any(r.status == "running" for r in env.rows(task_id)):
            assert time.monotonic() < deadline, "the first run never started"
            await asyncio.sleep(0.05)
        second = await run_task(task_id=task_id, return_state=True)
        return [await first, second]

    states = asyncio.run(both())
    done = [s for s in states if s.is_completed()]
    skipped = [s for s in states if s.is_failed()]
    assert len(done) == len(skipped) == 1, [s.message for s in states]
    winner = str(flow_run_id(done[0]))
    assert skipped[0].message is not None
    assert skipped[0].message.startswith(f"missed: skipped: run {winner} of this task")
    rows = {r.flow_run_id: r for r in env.rows(task_id)}
    assert rows[winner].status == "success"
    assert rows[str(flow_run_id(skipped[0]))].status == "missed"
    assert marks.read_text().splitlines() == ["ran"]


# ----------------------------------------------------------------------------- what Prefect shows


def test_run_artifacts(env: RunEnv) -> None:
    env.add_server("s1")
    name = unique("report")
    task_id = env.add_task(name, "--server", "s1", "--command", "seq 1 3000")
    first_state, _ = run_flow(task_id)
    state, result = run_flow(task_id)
    assert result.success
    run_id = flow_run_id(state)

    markdown = [a for a in read_artifacts(run_id) if a.type == "markdown" and a.key is None]
    assert len(markdown) == 1
    body = str(markdown[0].data)
    assert f"{name}: success" in body
    assert "| server | s1 |" in body
    assert "| command | `seq 1 3000` |" in body
    assert "| exit code | 0 |" in body
    assert f"| duration | {result.duration_ms} ms |" in body
    # the tail of the output, not all of it
    assert "2999\n3000\n" in body
    assert "\n1\n2\n3\n" not in body

    (view,) = read_artifacts(run_id, f"task-{name}-history")
    assert view.type == "markdown"
    lines = [line for line in str(view.data).splitlines() if line.startswith("| [")]
    # newest first, each linked to its flow run in Prefect's UI
    assert [line.split("](")[1].split(")")[0].rsplit("/", 1)[1] for line in lines] == [
        str(run_id),
        str(flow_run_id(first_state)),
    ]
    assert all("| success | s1 | 1 | manual |" in line for line in lines)
    assert "/runs/flow-run/" in lines[0]


def test_failure_artifact_shows_the_error(env: RunEnv) -> None:
    env.add_server("s1")
    name = unique("broken")
    task_id = env.add_task(name, "--server", "s1", "--command", "echo nope >&2; exit 9")
    state, result = run_flow(task_id)
    assert result.status == "failed"
    (markdown,) = [
        a for a in read_artifacts(flow_run_id(state)) if a.type == "markdown" and a.key is None
    ]
    body = str(markdown.data)
    assert f"✗ {name}: failed" in body
    assert "| exit code | 9 |" in body
    assert "**Error:** exit code 9: nope" in body


def test_live_output_in_flow_run_logs(env: RunEnv) -> None:
    env.add_server("s1")
    task_id = env.add_task(
        unique("chatty"), "--server", "s1",
        "--command", "echo line-one; echo line-two >&2; echo line-three",
    )  # fmt: skip
    state, result = run_flow(task_id)
    assert result.success
    wanted = ["[s1] line-one", "[s1 stderr] line-two", "[s1] line-three"]
    messages = read_logs(flow_run_id(state), wanted)
    assert set(wanted) <= set(messages), messages
    # stdout lines keep their order (stderr is another stream, interleaved freely)
    stdout = [m for m in messages if m in ("[s1] line-one", "[s1] line-three")]
    assert stdout == ["[s1] line-one", "[s1] line-three"]


def test_live_output_stops_at_the_cap(env: RunEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from svrctl.flows import run_task as module

    monkeypatch.setattr(module, "LIVE_LINE_CAP", 3)
    env.add_server("s1")
    task_id = env.add_task(unique("long"), "--server", "s1", "--command", "seq 1 6")
    state, result = run_flow(task_id)
    assert result.output == "1\n2\n3\n4\n5\n6\n"  # the result and history keep it all
    stop = "… live output stops here; the history row keeps the output"
    messages = read_logs(flow_run_id(state), ["[s1] 3", stop])
    assert [m for m in messages if m.startswith("[s1] ")] == ["[s1] 1", "[s1] 2", "[s1] 3"]
    assert messages.count(stop) == 1
    assert env.rows(task_id)[0].output == result.output


# ----------------------------------------------------------------------------- other routes


def test_local_task_through_the_flow(env: RunEnv) -> None:
    task_id = env.add_task(
        unique("here"), "--local", "--command", "echo local-out; echo local-err >&2; exit 2"
    )
    state, result = run_flow(task_id)
    assert (result.status, result.exit_code, result.output) == ("failed", 2, "local-out\n")
    assert result.error is not None and "local-err" in result.error
    (row,) = env.rows(task_id)
    assert (row.status, row.exit_code, row.flow_run_id) == ("failed", 2, str(flow_run_id(state)))
    messages = read_logs(flow_run_id(state), ["[" + row.server_name + "] local-out"])
    assert f"[{row.server_name}] local-out" in messages
    assert f"[{row.server_name} stderr] local-err" in messages


def test_plugin_task_through_the_flow(env: RunEnv) -> None:
    env.add_server("s1")
    task_id = env.add_task(
        unique("echo"), "--plugin", "echo", "--server", "s1", "--config", '{"message": "plug"}'
    )
    state, result = run_flow(task_id)
    assert result.success, result.error
    assert "s1 said: plug" in result.output
    (row,) = env.rows(task_id)
    assert (row.server_name, row.status) == ("s1", "success")
    assert state.is_completed()
