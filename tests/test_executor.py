"""``execute_task`` on its own, without Prefect: routing, timeouts, retries, overlap, misfire.

Every test checks what really happened: history rows and stats in the app database
(SQLite and PostgreSQL), files and processes on the host behind the real sshd.
The `run_env` fixture (tests/fixtures/runenv.py) sets each test's world up.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from fixtures.runenv import RunEnv
from fixtures.sshd import free_port

from svrctl.commands import CommandResult, LineCallback
from svrctl.db.models import RunStatus, TriggeredBy, utcnow
from svrctl.exceptions import NotFoundError
from svrctl.execution import engine
from svrctl.execution.engine import (
    MAX_BACKOFF_SECONDS,
    TaskExecutionResult,
    backoff_delay,
)
from svrctl.execution.history import Outcome
from svrctl.local import LocalRunner, local_host_name

pytestmark = pytest.mark.sshd


# ----------------------------------------------------------------------------- backoff


def test_backoff_is_zero_without_a_base_delay() -> None:
    assert [backoff_delay(0, n) for n in (1, 2, 10)] == [0.0, 0.0, 0.0]
    assert backoff_delay(-5, 3) == 0.0


def test_backoff_doubles_each_retry_within_20_percent_jitter() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 9):
        nominal = 10.0 * 2 ** (attempt - 1)
        for _ in range(50):
            delay = backoff_delay(10, attempt, rng)
            assert nominal * 0.8 <= delay <= nominal * 1.2, (attempt, delay)


def test_backoff_jitter_spreads_both_ways() -> None:
    rng = random.Random(99)
    delays = [backoff_delay(10, 1, rng) for _ in range(400)]
    assert min(delays) < 9.0 < 11.0 < max(delays)
    assert 9.5 < sum(delays) / len(delays) < 10.5
    # the same seed gives the same delays
    again = random.Random(99)
    assert [backoff_delay(10, 1, again) for _ in range(400)] == delays


def test_backoff_is_capped_at_an_hour_jitter_included() -> None:
    assert MAX_BACKOFF_SECONDS == 3600
    rng = random.Random(7)
    delays = [backoff_delay(30, attempt, rng) for attempt in (8, 13, 20, 100) for _ in range(100)]
    assert max(delays) == MAX_BACKOFF_SECONDS  # jitter above the cap is cut off
    assert min(delays) >= MAX_BACKOFF_SECONDS * 0.8  # jitter below it still spreads retries
    # just under the cap it still grows
    assert backoff_delay(30, 5, random.Random(1)) < backoff_delay(30, 6, random.Random(1))


def test_engine_waits_with_backoff_between_attempts(run_env: RunEnv) -> None:
    log = run_env.scratch / "attempts"
    task_id = run_env.add_task(
        "flaky", "--local", "--command", f"echo try >> {log}; exit 1",
        "--retries", "2", "--retry-delay", "10",
    )  # fmt: skip
    waits: list[float] = []
    started = time.monotonic()
    result = run_env.run(task_id, sleep=waits.append)
    assert time.monotonic() - started < 10  # the injected sleep did the waiting
    assert result.status == "failed"
    assert result.attempts == 3
    assert len(waits) == 2
    assert 8.0 <= waits[0] <= 12.0
    assert 16.0 <= waits[1] <= 24.0
    assert log.read_text().splitlines() == ["try"] * 3


def test_engine_really_sleeps_between_attempts(run_env: RunEnv) -> None:
    task_id = run_env.add_task(
        "flaky", "--local", "--command", "exit 1", "--retries", "1", "--retry-delay", "1"
    )
    result = run_env.run(task_id)
    assert result.attempts == 2
    first, second = run_env.rows(task_id)
    assert first.finished_at is not None
    gap = (second.started_at - first.finished_at).total_seconds()
    assert 0.75 <= gap < 5.0


def test_no_wait_after_a_success(run_env: RunEnv) -> None:
    task_id = run_env.add_task(
        "fine", "--local", "--command", "true", "--retries", "3", "--retry-delay", "10"
    )
    waits: list[float] = []
    result = run_env.run(task_id, sleep=waits.append)
    assert result.success
    assert waits == []
    assert len(run_env.rows(task_id)) == 1


# ----------------------------------------------------------------------------- concurrency


def test_twenty_concurrent_runs_are_all_recorded(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    marks = run_env.scratch / "marks"
    task_id = run_env.add_task(
        "busy", "--server", "s1", "--overlap", "queue", "--command", f"echo ran >> {marks}"
    )
    count = 20
    barrier = threading.Barrier(count)
    results: list[TaskExecutionResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            result = run_env.run(task_id)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    assert len(results) == count
    assert all(r.success for r in results), [r.error for r in results if not r.success]
    rows = run_env.rows(task_id)
    assert len(rows) == count
    assert {r.status for r in rows} == {"success"}
    assert sorted(i for r in results for i in r.history_ids) == [r.id for r in rows]
    assert marks.read_text().splitlines() == ["ran"] * count
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (count, count, 0)


def test_overlap_skip_records_missed_and_does_not_run(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    marks = run_env.scratch / "marks"
    task_id = run_env.add_task(
        "solo", "--server", "s1", "--overlap", "skip", "--command", f"echo ran >> {marks}; sleep 2"
    )
    first: list[TaskExecutionResult] = []
    thread = threading.Thread(
        target=lambda: first.append(run_env.run(task_id, flow_run_id="first-run-0001"))
    )
    thread.start()
    try:
        running = run_env.wait_running(task_id)
        assert running.flow_run_id == "first-run-0001"
        second = run_env.run(task_id, flow_run_id="second-run-0002")
    finally:
        thread.join(timeout=60)
    assert second.status == "missed"
    assert not second.success
    assert second.error is not None
    assert "first-run-0001" in second.error
    assert "still running" in second.error and "'skip'" in second.error
    assert first and first[0].success, first
    rows = run_env.rows(task_id)
    assert [(r.flow_run_id, r.status) for r in rows] == [
        ("first-run-0001", "success"),
        ("second-run-0002", "missed"),
    ]
    assert rows[1].error == second.error
    # the step ran once: for the first run only
    assert marks.read_text().splitlines() == ["ran"]
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (2, 1, 0)
    assert task.last_status == "success"


def test_overlap_skip_lets_one_of_many_simultaneous_runs_through(run_env: RunEnv) -> None:
    marks = run_env.scratch / "marks"
    task_id = run_env.add_task(
        "solo", "--local", "--overlap", "skip", "--command", f"echo ran >> {marks}; sleep 1"
    )
    count = 6
    barrier = threading.Barrier(count)
    results: list[TaskExecutionResult] = []

    def one() -> None:
        barrier.wait(timeout=30)
        results.append(run_env.run(task_id))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    statuses = sorted(r.status for r in results)
    assert statuses == ["missed"] * (count - 1) + ["success"]
    assert marks.read_text().splitlines() == ["ran"]
    rows = run_env.rows(task_id)
    assert sorted(r.status for r in rows) == statuses


# ----------------------------------------------------------------------------- misfire


def test_late_scheduled_run_is_missed_and_not_run(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    marker = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "nightly", "--server", "s1", "--misfire-grace", "60", "--command", f"touch {marker}"
    )
    due = utcnow() - timedelta(minutes=10)
    result = run_env.run(task_id, triggered_by=TriggeredBy.SCHEDULE, scheduled_at=due)
    assert result.status == "missed"
    assert result.error is not None
    assert "misfire grace of 60 s" in result.error
    assert not marker.exists()
    (row,) = run_env.rows(task_id)
    assert (row.status, row.triggered_by, row.success) == ("missed", "schedule", False)
    assert row.error == result.error

    # a scheduled run within the grace runs
    result = run_env.run(
        task_id, triggered_by=TriggeredBy.SCHEDULE, scheduled_at=utcnow() - timedelta(seconds=5)
    )
    assert result.success, result.error
    assert marker.exists()
    row = run_env.rows(task_id)[-1]
    assert (row.status, row.triggered_by) == ("success", "schedule")
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (2, 1, 0)


def test_manual_run_ignores_misfire_grace(run_env: RunEnv) -> None:
    marker = run_env.scratch / "ran"
    task_id = run_env.add_task(
        "nightly", "--local", "--misfire-grace", "0", "--command", f"touch {marker}"
    )
    result = run_env.run(task_id, scheduled_at=utcnow() - timedelta(hours=1))
    assert result.success
    assert marker.exists()


# ----------------------------------------------------------------------------- targets


def test_unknown_task_id_raises_not_found(run_env: RunEnv) -> None:
    with pytest.raises(NotFoundError, match="no task with id 4242"):
        run_env.run(4242)


def test_tag_without_enabled_servers_fails_and_is_recorded(run_env: RunEnv) -> None:
    run_env.add_server("s1", "fleet")
    run_env.ok("server", "edit", "s1", "--disabled")
    task_id = run_env.add_task("fleet-uptime", "--tag", "fleet", "--command", "uptime")
    result = run_env.run(task_id)
    assert result.status == "failed"
    assert result.error == "no enabled server has the tag 'fleet'"
    (row,) = run_env.rows(task_id)
    assert (row.status, row.error) == ("failed", result.error)
    assert run_env.task(task_id).failure_count == 1


def test_tag_run_retries_only_the_failed_servers(run_env: RunEnv) -> None:
    run_env.add_server("alpha", "fleet")
    run_env.add_server("gamma", "fleet", port=free_port())
    log = run_env.scratch / "alpha-runs"
    task_id = run_env.add_task(
        "fleet-echo", "--tag", "fleet", "--retries", "2", "--retry-delay", "0",
        "--command", f"echo ran >> {log}",
    )  # fmt: skip
    result = run_env.run(task_id)
    assert (result.status, result.attempts) == ("failed", 3)
    assert result.error is not None and result.error.startswith("1 of 2 servers failed")
    rows = run_env.rows(task_id)
    assert sorted((r.attempt, r.server_name, r.status, r.triggered_by) for r in rows) == [
        (1, "alpha", "success", "manual"),
        (1, "gamma", "failed", "manual"),
        (2, "gamma", "failed", "retry"),
        (3, "gamma", "failed", "retry"),
    ]
    assert log.read_text().splitlines() == ["ran"]  # alpha ran once
    task = run_env.task(task_id)
    assert (task.run_count, task.failure_count) == (1, 1)


def test_unreachable_server_fails_with_the_reason(run_env: RunEnv) -> None:
    run_env.add_server("gone", port=free_port())
    task_id = run_env.add_task("t", "--server", "gone", "--command", "true")
    result = run_env.run(task_id)
    assert result.status == "failed"
    assert result.error is not None and "connection refused" in result.error
    (row,) = run_env.rows(task_id)
    assert (row.server_name, row.status, row.exit_code) == ("gone", "failed", None)


# ----------------------------------------------------------------------------- local route


def test_local_command_records_stdout_stderr_and_exit_code(run_env: RunEnv) -> None:
    task_id = run_env.add_task(
        "local-fail", "--local", "--command", "echo out-line; echo err-line >&2; exit 3"
    )
    lines: list[tuple[str, str, str]] = []
    result = run_env.run(task_id, on_line=lambda *line: lines.append(line))
    assert (result.status, result.exit_code, result.success) == ("failed", 3, False)
    assert result.output == "out-line\n"
    assert result.error is not None
    assert "exit code 3" in result.error and "err-line" in result.error
    host = local_host_name()
    assert sorted(lines) == [(host, "stderr", "err-line"), (host, "stdout", "out-line")]
    (row,) = run_env.rows(task_id)
    assert (row.server_name, row.status, row.exit_code, row.output) == (
        host,
        "failed",
        3,
        "out-line\n",
    )
    assert row.error == result.error


def test_local_command_success(run_env: RunEnv) -> None:
    task_id = run_env.add_task(
        "local-ok", "--local", "--command", "printf '%s\\n'", "--args", '["a b", "$(id)"]'
    )
    result = run_env.run(task_id)
    assert (result.status, result.exit_code, result.error) == ("success", 0, None)
    assert result.output == "a b\n$(id)\n"
    task = run_env.task(task_id)
    assert (task.run_count, task.success_count, task.last_status) == (1, 1, "success")


def _local_pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def test_local_timeout_kills_the_process_tree(run_env: RunEnv) -> None:
    # a child in its own session (setsid) and a foreground sleep: both must go
    task_id = run_env.add_task(
        "local-slow", "--local", "--timeout", "1", "--command", "setsid sleep 341 & sleep 342"
    )
    try:
        started = time.monotonic()
        result = run_env.run(task_id)
        elapsed = time.monotonic() - started
        assert result.status == "timed_out"
        assert result.exit_code is None
        assert result.error is not None and "timeout of 1 s" in result.error
        assert elapsed < 10
        deadline = time.monotonic() + 5
        while (_local_pids("^sleep 34[12]$")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _local_pids("^sleep 34[12]$") == []
        (row,) = run_env.rows(task_id)
        assert row.status == "timed_out"
        assert run_env.task(task_id).failure_count == 1
    finally:
        subprocess.run(["pkill", "-KILL", "-f", "^sleep 34[12]$"], check=False)


# ----------------------------------------------------------------------------- plugins


def test_echo_plugin_locally(run_env: RunEnv) -> None:
    task_id = run_env.add_task("say", "--plugin", "echo", "--config", '{"message": "hi there"}')
    result = run_env.run(task_id)
    assert result.success, result.error
    assert f"{local_host_name()} said: hi there" in result.output
    (row,) = run_env.rows(task_id)
    assert (row.server_name, row.status) == (local_host_name(), "success")


def test_echo_plugin_over_ssh(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    task_id = run_env.add_task(
        "say", "--plugin", "echo", "--server", "s1", "--config", '{"message": "via ssh"}'
    )
    result = run_env.run(task_id)
    assert result.success, result.error
    assert "s1 said: via ssh" in result.output
    (row,) = run_env.rows(task_id)
    assert (row.server_name, row.status) == ("s1", "success")
    assert "s1 said: via ssh" in row.output


def test_echo_plugin_reporting_failure_fails_the_run(run_env: RunEnv) -> None:
    run_env.add_server("s1")
    task_id = run_env.add_task(
        "say", "--plugin", "echo", "--server", "s1", "--config", '{"fail": true}'
    )
    result = run_env.run(task_id)
    assert result.status == "failed"
    assert result.error == "s1 said: hello from svrctl"
    (row,) = run_env.rows(task_id)
    assert (row.status, row.error) == ("failed", result.error)
    assert run_env.task(task_id).failure_count == 1


def test_echo_plugin_on_unreachable_server_fails(run_env: RunEnv) -> None:
    run_env.add_server("gone", port=free_port())
    task_id = run_env.add_task("say", "--plugin", "echo", "--server", "gone")
    result = run_env.run(task_id)
    assert result.status == "failed"
    assert result.error is not None and "connection refused" in result.error


def test_a_step_that_raises_still_finishes_its_row(
    run_env: RunEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from svrctl.plugins.echo import EchoPlugin

    def broken(self: EchoPlugin, ctx: object, config: object) -> None:
        raise RuntimeError("plugin blew up")

    monkeypatch.setattr(EchoPlugin, "run", broken)
    task_id = run_env.add_task("say", "--plugin", "echo")
    result = run_env.run(task_id)
    assert (result.status, result.error) == ("failed", "RuntimeError: plugin blew up")
    (row,) = run_env.rows(task_id)
    assert (row.status, row.error) == ("failed", "RuntimeError: plugin blew up")
    assert row.finished_at is not None
    assert run_env.task(task_id).failure_count == 1


# ----------------------------------------------------------------------------- watchdog


def test_watchdog_abandons_a_step_blocked_past_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "WATCHDOG_GRACE_SECONDS", 0.3)
    release = threading.Event()

    def stuck() -> Outcome:
        release.wait(30)
        return Outcome(RunStatus.SUCCESS)

    started = time.monotonic()
    try:
        outcome = engine._with_deadline(stuck, 1)
    finally:
        release.set()
    elapsed = time.monotonic() - started
    assert outcome.status is RunStatus.TIMED_OUT
    assert outcome.error is not None and "abandoned" in outcome.error
    assert outcome.duration_ms == 1300
    assert 1.2 <= elapsed < 3.0


def test_watchdog_returns_the_outcome_or_raises_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "WATCHDOG_GRACE_SECONDS", 0.3)
    done = Outcome(RunStatus.FAILED, exit_code=2)
    assert engine._with_deadline(lambda: done, 1) is done

    def broken() -> Outcome:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        engine._with_deadline(broken, 1)


def test_stuck_step_is_recorded_timed_out(run_env: RunEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "WATCHDOG_GRACE_SECONDS", 0.5)
    release = threading.Event()

    def hang(
        self: LocalRunner, command: str, *, timeout: float, on_line: LineCallback | None = None
    ) -> CommandResult:
        release.wait(60)  # ignores its own timeout, like a wedged library call
        raise AssertionError("released only after the test")

    monkeypatch.setattr(LocalRunner, "run", hang)
    task_id = run_env.add_task("wedged", "--local", "--timeout", "1", "--command", "true")
    try:
        started = time.monotonic()
        result = run_env.run(task_id)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.status == "timed_out"
    assert result.error is not None and "abandoned" in result.error
    assert elapsed < 5
    (row,) = run_env.rows(task_id)
    assert row.status == "timed_out" and row.finished_at is not None
    task = run_env.task(task_id)
    assert (task.run_count, task.failure_count, task.last_status) == (1, 1, "timed_out")
