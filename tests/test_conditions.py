"""Conditions: a task's ``--only-if`` check, and the ``skipped`` history status.

The check runs on each target before the step, with the same runner (real sshd, or
the local host). Each test proves whether the step ran by a file it writes on the
host, and checks history rows, task stats and, through a real Prefect API, the
flow run's final state.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any
from uuid import UUID

import pytest
from fixtures.runenv import RunEnv
from fixtures.sshd import SshdFactory, SshdTarget, free_port
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Artifact, FlowRun, State

from svrctl.db.models import utcnow
from svrctl.execution.engine import TaskExecutionResult
from svrctl.local import local_host_name

pytestmark = pytest.mark.sshd

EXECUTOR_LOG = "svrctl.executor"


def assert_skipped_stats(env: RunEnv, task_id: int, runs: int, successes: int) -> None:
    """The last run was skipped: counted as a run, neither as a success nor a failure."""
    task = env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (runs, successes, 0)
    assert task.last_status == "skipped"
    assert task.last_run_at is not None
    assert task.last_duration_ms is not None


# ----------------------------------------------------------------------------- one target


def test_passing_check_runs_the_step_over_ssh(
    run_env: RunEnv, caplog: pytest.LogCaptureFixture
) -> None:
    run_env.add_server("s1")
    marker = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "guarded", "--server", "s1", "--command", f"echo step; touch {marker}",
        "--only-if", f"echo checking; test -d {run_env.scratch}",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger=EXECUTOR_LOG):
        result = run_env.run(task_id)
    assert (result.success, result.status, result.exit_code) == (True, "success", 0)
    assert result.output == "step\n"  # the step's output, not the check's
    assert marker.exists()
    (row,) = run_env.rows(task_id)
    assert (row.server_name, row.status, row.success) == ("s1", "success", True)
    assert row.output == "step\n"
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 1, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert f"Checking condition on s1: echo checking; test -d {run_env.scratch}" in messages


def test_failing_check_skips_the_step_over_ssh(
    run_env: RunEnv, caplog: pytest.LogCaptureFixture
) -> None:
    run_env.add_server("s1")
    marker = run_env.scratch / "ran"
    ready = run_env.scratch / "ready"
    check = f"echo looked for {ready.name}; test -e {ready} || {{ echo not ready >&2; exit 3; }}"
    task_id = run_env.add_task(
        "guarded", "--server", "s1", "--command", f"touch {marker}", "--only-if", check
    )
    # the check passes while the file is there: the step runs
    ready.touch()
    assert run_env.run(task_id).success
    assert marker.exists()
    marker.unlink()
    ready.unlink()

    with caplog.at_level(logging.INFO, logger=EXECUTOR_LOG):
        result = run_env.run(task_id)
    assert (result.success, result.status, result.exit_code) == (False, "skipped", 3)
    assert result.output == "looked for ready\n"
    assert result.error is not None
    first, *rest = result.error.splitlines()
    assert first == f"skipped: the check `{check}` exited 3 on s1"
    assert rest == ["not ready"]
    assert not marker.exists()  # the step did not run

    first_row, row = run_env.rows(task_id)
    assert first_row.status == "success"
    assert (row.server_name, row.attempt, row.status) == ("s1", 1, "skipped")
    assert row.success is None  # neither a success nor a failure
    assert (row.exit_code, row.output, row.error) == (3, "looked for ready\n", result.error)
    assert row.finished_at is not None
    assert result.history_ids == [row.id]
    assert_skipped_stats(run_env, task_id, runs=2, successes=1)

    info = [(r.levelno, r.getMessage()) for r in caplog.records]
    reason = result.error.removeprefix("skipped: ")
    assert (logging.INFO, f"Task guarded skipped: {reason}") in info
    assert not [m for level, m in info if level >= logging.WARNING]


def test_failing_check_skips_a_local_task(run_env: RunEnv) -> None:
    marker = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "local-guarded", "--local", "--command", f"touch {marker}",
        "--only-if", "echo disk is full; exit 1",
    )  # fmt: skip
    result = run_env.run(task_id)
    host = local_host_name()
    assert (result.status, result.exit_code, result.output) == ("skipped", 1, "disk is full\n")
    assert result.error == f"skipped: the check `echo disk is full; exit 1` exited 1 on {host}"
    assert not marker.exists()
    (row,) = run_env.rows(task_id)
    assert (row.server_name, row.status, row.success, row.exit_code) == (host, "skipped", None, 1)
    assert row.output == "disk is full\n"
    assert_skipped_stats(run_env, task_id, runs=1, successes=0)


def test_passing_check_runs_a_local_task(run_env: RunEnv) -> None:
    marker = run_env.scratch / "ran"
    checks = run_env.scratch / "checks"
    task_id = run_env.add_task(
        "local-guarded", "--local", "--command", f"touch {marker}",
        "--only-if", f"echo checked >> {checks}",
    )  # fmt: skip
    result = run_env.run(task_id)
    assert (result.status, result.output) == ("success", "")
    assert marker.exists()
    assert checks.read_text() == "checked\n"  # the check ran, once


def test_failing_check_skips_a_plugin_task(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    ready = run_env.scratch / "ready"
    task_id = run_env.add_task(
        "say", "--plugin", "echo", "--server", "s1", "--config", '{"message": "plugin ran"}',
        "--only-if", f"test -e {ready}",
    )  # fmt: skip
    result = run_env.run(task_id)
    assert (result.status, result.exit_code, result.output) == ("skipped", 1, "")
    assert result.error == f"skipped: the check `test -e {ready}` exited 1 on s1"
    (row,) = run_env.rows(task_id)
    assert (row.status, row.success, row.exit_code) == ("skipped", None, 1)
    assert "plugin ran" not in (row.output or "")  # the plugin's echo did not run
    assert_skipped_stats(run_env, task_id, runs=1, successes=0)

    ready.touch()
    again = run_env.run(task_id)
    assert again.success, again.error
    assert "s1 said: plugin ran" in again.output
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (2, 1, 0)


def test_failing_check_skips_a_local_plugin_task(run_env: RunEnv) -> None:
    task_id = run_env.add_task(
        "say", "--plugin", "echo", "--config", '{"message": "plugin ran"}', "--only-if", "false"
    )
    result = run_env.run(task_id)
    assert result.status == "skipped"
    (row,) = run_env.rows(task_id)
    assert (row.server_name, row.status, row.success) == (local_host_name(), "skipped", None)
    assert "plugin ran" not in (row.output or "")


# ----------------------------------------------------------------------------- several targets


def second_sshd(env: RunEnv, sshd_factory: SshdFactory) -> SshdTarget:
    """Start another sshd (same host, own port and host key) that accepts the test key."""
    other = sshd_factory(authorized_keys=[env.sshd.user_key])
    known_hosts = env.settings.home / "known_hosts"
    known_hosts.write_text(known_hosts.read_text() + other.host_key_line + "\n")
    return other


def test_tag_run_with_one_server_skipped_succeeds(
    run_env: RunEnv, sshd_factory: SshdFactory
) -> None:
    other = second_sshd(run_env, sshd_factory)
    run_env.add_server("primary", "fleet")
    run_env.add_server("standby", "fleet", port=other.port)
    log = run_env.scratch / "ran-on-ports"
    # sshd sets SSH_CONNECTION to "client_ip client_port server_ip server_port": the check
    # says no on the standby's sshd, and the step records which sshd it ran behind
    check = f'test "${{SSH_CONNECTION##* }}" != {other.port}'
    task_id = run_env.add_task(
        "fleet-job", "--tag", "fleet", "--command", f'echo "${{SSH_CONNECTION##* }}" >> {log}',
        "--only-if", check,
    )  # fmt: skip
    result = run_env.run(task_id)
    assert (result.success, result.status, result.error) == (True, "success", None)
    assert log.read_text().splitlines() == [str(run_env.sshd.port)]  # primary only
    assert "== primary: success ==" in result.output
    assert "== standby: skipped ==" in result.output
    rows = {r.server_name: r for r in run_env.rows(task_id)}
    assert (rows["primary"].status, rows["primary"].success) == ("success", True)
    assert (rows["standby"].status, rows["standby"].success) == ("skipped", None)
    assert rows["standby"].exit_code == 1
    assert rows["standby"].error == f"skipped: the check `{check}` exited 1 on standby"
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 1, 0)
    assert task.last_status == "success"


def test_tag_run_with_every_server_skipped_is_skipped(
    run_env: RunEnv, sshd_factory: SshdFactory
) -> None:
    other = second_sshd(run_env, sshd_factory)
    run_env.add_server("primary", "fleet")
    run_env.add_server("standby", "fleet", port=other.port)
    log = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "fleet-job", "--tag", "fleet", "--command", f"echo ran >> {log}",
        "--only-if", "echo \"not today on ${SSH_CONNECTION##* }\"; exit 4",
    )  # fmt: skip
    result = run_env.run(task_id)
    assert (result.success, result.status, result.exit_code) == (False, "skipped", 4)
    assert result.error is not None
    assert result.error.startswith("skipped on all 2 servers: primary: the check `")
    assert "; standby: the check `" in result.error
    assert f"== primary: skipped ==\nnot today on {run_env.sshd.port}" in result.output
    assert f"== standby: skipped ==\nnot today on {other.port}" in result.output
    assert not log.exists()
    rows = run_env.rows(task_id)
    assert sorted((r.server_name, r.status, r.success) for r in rows) == [
        ("primary", "skipped", None),
        ("standby", "skipped", None),
    ]
    assert_skipped_stats(run_env, task_id, runs=1, successes=0)


def test_tag_run_fails_when_a_checked_server_fails(
    run_env: RunEnv, sshd_factory: SshdFactory
) -> None:
    other = second_sshd(run_env, sshd_factory)
    run_env.add_server("primary", "fleet")
    run_env.add_server("standby", "fleet", port=other.port)
    log = run_env.scratch / "ran"
    # primary passes the check and its step fails; standby is skipped and never retried
    task_id = run_env.add_task(
        "fleet-job", "--tag", "fleet", "--retries", "2", "--retry-delay", "0",
        "--command", f"echo ran >> {log}; exit 2",
        "--only-if", f'test "${{SSH_CONNECTION##* }}" != {other.port}',
    )  # fmt: skip
    result = run_env.run(task_id)
    assert (result.status, result.attempts) == ("failed", 3)
    assert result.error is not None
    assert result.error.startswith("1 of 2 servers failed (1 needed to succeed, 1 skipped)")
    rows = run_env.rows(task_id)
    assert sorted((r.attempt, r.server_name, r.status, r.triggered_by) for r in rows) == [
        (1, "primary", "failed", "manual"),
        (1, "standby", "skipped", "manual"),
        (2, "primary", "failed", "retry"),
        (3, "primary", "failed", "retry"),
    ]
    assert log.read_text().splitlines() == ["ran"] * 3
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 0, 1)


def test_min_success_still_needs_its_successes_when_servers_skip(
    run_env: RunEnv, sshd_factory: SshdFactory
) -> None:
    other = second_sshd(run_env, sshd_factory)
    run_env.add_server("primary", "fleet")
    run_env.add_server("standby", "fleet", port=other.port)
    log = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "fleet-job", "--tag", "fleet", "--min-success", "2", "--command", f"echo ran >> {log}",
        "--only-if", f'test "${{SSH_CONNECTION##* }}" != {other.port}',
    )  # fmt: skip
    result = run_env.run(task_id)
    assert (result.success, result.status) == (False, "failed")
    assert result.error is not None
    assert result.error.startswith(
        "1 of 2 servers succeeded and 1 skipped (2 needed to succeed): standby: the check `"
    )
    assert log.read_text().splitlines() == ["ran"]
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 0, 1)


# ----------------------------------------------------------------------------- retries, errors


def test_skipped_run_is_not_retried(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    log = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "flaky", "--server", "s1", "--retries", "3", "--retry-delay", "10",
        "--command", f"echo ran >> {log}; exit 1", "--only-if", "exit 5",
    )  # fmt: skip
    waits: list[float] = []
    result = run_env.run(task_id, sleep=waits.append)
    assert (result.status, result.attempts, result.exit_code) == ("skipped", 1, 5)
    assert waits == []
    (row,) = run_env.rows(task_id)
    assert (row.status, row.attempt) == ("skipped", 1)
    assert not log.exists()
    assert_skipped_stats(run_env, task_id, runs=1, successes=0)


def test_check_that_cannot_connect_fails_the_run(run_env: RunEnv) -> None:
    run_env.add_server("gone", port=free_port())
    task_id = run_env.add_task(
        "guarded", "--server", "gone", "--command", "true", "--only-if", "test -e /etc"
    )
    result = run_env.run(task_id)
    assert (result.success, result.status, result.exit_code) == (False, "failed", None)
    assert result.error is not None
    assert result.error.startswith("the check `test -e /etc` failed to run on gone: ")
    assert "connection refused" in result.error
    (row,) = run_env.rows(task_id)
    assert (row.status, row.success, row.error) == ("failed", False, result.error)
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (1, 0, 1)
    assert task.last_status == "failed"


def test_check_that_times_out_fails_the_run(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    marker = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "guarded", "--server", "s1", "--timeout", "1", "--command", f"touch {marker}",
        "--only-if", "sleep 377",
    )  # fmt: skip
    started = time.monotonic()
    result = run_env.run(task_id)
    assert time.monotonic() - started < 10
    assert (result.success, result.status) == (False, "timed_out")
    assert result.error is not None
    assert result.error.startswith("the check `sleep 377` failed to run on s1: ")
    assert "timeout" in result.error
    assert not marker.exists()
    assert run_env.wait_no_remote("^sleep 377$") == []  # the check was stopped
    (row,) = run_env.rows(task_id)
    assert (row.status, row.success) == ("timed_out", False)
    task = run_env.task(task_id)
    assert (task.run_count, task.failure_count, task.last_status) == (1, 1, "timed_out")


def test_check_counts_against_the_task_timeout(run_env: RunEnv) -> None:
    marker = run_env.scratch / "ran"
    # each part fits in the 3 s timeout alone, but not both together
    task_id = run_env.add_task(
        "guarded", "--local", "--timeout", "3", "--command", f"sleep 2; touch {marker}",
        "--only-if", "sleep 2",
    )  # fmt: skip
    started = time.monotonic()
    result = run_env.run(task_id)
    assert time.monotonic() - started < 8
    assert result.status == "timed_out"
    time.sleep(1.5)  # the step would have touched the marker by now had it not been stopped
    assert not marker.exists()


# ----------------------------------------------------------------------------- Prefect and CLI


@pytest.fixture
def env(prefect_api: str, run_env: RunEnv) -> RunEnv:
    """``run_env`` with the session's Prefect test server up (``PREFECT_API_URL`` set)."""
    return run_env


def unique(prefix: str) -> str:
    """A task name no other test uses: the Prefect server is shared by the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_flow(task_id: int) -> tuple[State[Any], TaskExecutionResult]:
    from svrctl.flows.run_task import run_task

    state = asyncio.run(run_task(task_id=task_id, return_state=True))
    result = state.result(raise_on_failure=False)
    assert isinstance(result, TaskExecutionResult), result
    return state, result


def read_flow_run(run_id: UUID) -> FlowRun:
    async def read() -> FlowRun:
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    return asyncio.run(read())


def read_markdown(run_id: UUID) -> str:
    async def read() -> list[Artifact]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )

    (markdown,) = [a for a in asyncio.run(read()) if a.type == "markdown" and a.key is None]
    return str(markdown.data)


def flow_run_event_names(run_id: UUID, wanted: str, timeout: float = 60.0) -> list[str]:
    """Return the names of the events about a flow run, once ``wanted`` is among them."""
    from prefect.events.filters import EventFilter, EventResourceFilter

    event_filter = EventFilter(resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]))

    async def read() -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with get_client() as client:
            while True:
                response = await client._client.post(
                    "/events/filter",
                    json={"filter": event_filter.model_dump(mode="json"), "limit": 50},
                )
                response.raise_for_status()
                names = [e["event"] for e in response.json()["events"]]
                if wanted in names or loop.time() > deadline:
                    return names
                await asyncio.sleep(0.5)

    return asyncio.run(read())


def test_skipped_flow_run_ends_completed_named_skipped(env: RunEnv) -> None:
    env.add_server("s1")
    name = unique("guarded")
    marker = env.scratch / "ran"
    task_id = env.add_task(
        name, "--server", "s1", "--command", f"touch {marker}",
        "--only-if", "echo maintenance window; exit 1",
    )  # fmt: skip
    before = utcnow()
    state, result = run_flow(task_id)
    assert (result.status, result.success, result.exit_code) == ("skipped", False, 1)
    assert not marker.exists()

    # not a failure, and not a plain Completed: automations on Completed must not fire
    assert state.is_completed()
    assert state.name == "Skipped"
    assert state.message == result.error
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    run = read_flow_run(run_id)
    assert run.state is not None
    assert (run.state.type.value, run.state.name) == ("COMPLETED", "Skipped")
    reason = "skipped: the check `echo maintenance window; exit 1` exited 1 on s1"
    assert run.state.message == reason

    # the event automations see: Skipped, never Completed (nor Failed)
    names = flow_run_event_names(run_id, "prefect.flow-run.Skipped")
    assert "prefect.flow-run.Skipped" in names, names
    assert "prefect.flow-run.Completed" not in names
    assert "prefect.flow-run.Failed" not in names

    (row,) = env.rows(task_id)
    assert (row.status, row.success, row.flow_run_id) == ("skipped", None, str(run_id))
    assert row.output == "maintenance window\n"
    assert row.started_at >= before
    assert_skipped_stats(env, task_id, runs=1, successes=0)

    body = read_markdown(run_id)
    assert f"### – {name}: skipped" in body
    assert "✗" not in body
    assert "**Error:** skipped: the check" in body
    assert "maintenance window" in body


def test_flow_run_with_a_passing_check_ends_completed(env: RunEnv) -> None:
    env.add_server("s1")
    marker = env.scratch / "ran"
    checks = env.scratch / "checks"
    task_id = env.add_task(
        unique("guarded"), "--server", "s1", "--command", f"touch {marker}",
        "--only-if", f"echo checked >> {checks}",
    )  # fmt: skip
    state, result = run_flow(task_id)
    assert result.success
    assert marker.exists()
    assert checks.read_text() == "checked\n"  # the check ran, once
    assert (state.type.value, state.name) == ("COMPLETED", "Completed")


def test_cli_task_run_of_a_skipped_run_exits_0(env: RunEnv) -> None:
    env.add_server("s1")
    marker = env.scratch / "ran"
    task_id = env.add_task(
        "guarded", "--server", "s1", "--command", f"touch {marker}",
        "--only-if", "echo nothing to do; exit 1",
    )  # fmt: skip
    result = env.svrctl("task", "run", "guarded")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines == [
        "– skipped: the check `echo nothing to do; exit 1` exited 1 on s1",
        "nothing to do",
    ]
    assert not re.search("✗|failed", result.stdout)
    assert not marker.exists()
    (row,) = env.rows(task_id)
    assert row.status == "skipped"

    as_json = env.svrctl("task", "run", "guarded", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert '"status": "skipped"' in as_json.stdout
