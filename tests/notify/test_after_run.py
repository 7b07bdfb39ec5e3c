"""The notification hook end to end: real database, real delivery, a real loopback listener.

The first tests run tasks through the ``run-task`` flow (real Prefect test API, the
real sshd) and check what the recording Gotify/ntfy stand-in received; the others
call the hook as the flow and reconciliation do, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fixtures.notify_listener import NotifyListener, closed_port, text_in_database
from fixtures.runenv import RunEnv
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import State
from sqlalchemy import select, update

from svrctl import runtime
from svrctl.db.engine import Database
from svrctl.db.models import NotificationLog, RunStatus, Task
from svrctl.execution.engine import TaskExecutionResult
from svrctl.execution.history import begin_attempt, record_final
from svrctl.execution.reconcile import reconcile_running
from svrctl.flows.run_task import run_task
from svrctl.notify import DeliveryResult
from svrctl.notify.after_run import FinishedRun, notify_after_run
from svrctl.notify.channels import add_channel
from svrctl.notify.messages import human_duration
from svrctl.settings import Settings, load_settings
from svrctl.specs import TaskSpec
from svrctl.tasks import add_task

GOTIFY_TOKEN = "AgotifyHookT0ken.q7"
NTFY_TOKEN = "tk_ntfyhooksecret99"
UI = "http://ui.test:4200"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.usefixtures("prefect_api")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def gotify(db: Database, listener: NotifyListener, name: str | None = None) -> str:
    """Add a Gotify channel (in the default set) pointing at the listener; return its name."""
    name = name or unique("gotify")
    listener.gotify_token = GOTIFY_TOKEN
    add_channel(db, name=name, kind="gotify", url=listener.url, token=GOTIFY_TOKEN, default=True)
    return name


def messages(listener: NotifyListener) -> list[dict[str, Any]]:
    """The Gotify messages the listener got: title, message, priority."""
    return [r.json() for r in listener.requests if r.path == "/message"]


def log_rows(db: Database) -> list[NotificationLog]:
    with db.read() as session:
        return list(session.scalars(select(NotificationLog).order_by(NotificationLog.id)))


# ----------------------------------------------------------------------------- the run-task flow


@pytest.fixture
def notify_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 s notification timeout and a Prefect UI address, for the settings read next."""
    monkeypatch.setenv("SVRCTL_NOTIFY_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("SVRCTL_PREFECT_UI_URL", UI)


@pytest.fixture
def env(notify_settings: None, run_env: RunEnv) -> RunEnv:
    """``run_env`` (real sshd, Prefect API up) read with ``notify_settings``."""
    assert run_env.settings.notify_timeout_seconds == 2
    return run_env


def run_flow(task_id: int) -> tuple[State[Any], TaskExecutionResult]:
    state = asyncio.run(run_task(task_id=task_id, return_state=True))
    result = state.result(raise_on_failure=False)
    assert isinstance(result, TaskExecutionResult), result
    return state, result


def run_id_of(state: State[Any]) -> UUID:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def flow_logs(run_id: UUID, wanted: str, timeout: float = 15.0) -> list[str]:
    async def read() -> list[str]:
        deadline = time.monotonic() + timeout
        async with get_client() as client:
            while True:
                logs = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
                )
                found = [log.message for log in logs]
                if any(wanted in m for m in found) or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.3)

    return asyncio.run(read())


@pytest.mark.sshd
def test_failure_once_then_silence_then_recovery_through_the_flow(
    env: RunEnv, notify_listener: NotifyListener
) -> None:
    env.add_server("s1")
    channel = gotify(env.db, notify_listener)
    marker = env.scratch / "fixed"
    name = unique("backup")
    command = (
        f"if [ -e {marker} ]; then echo all good; else "
        "for i in $(seq 1 40); do echo line $i; done; echo 'tick ``` ~~~~ [x](http://evil)'; "
        "echo 'disk full' >&2; exit 3; fi"
    )
    task_id = env.add_task(name, "--server", "s1", "--command", command)

    state, result = run_flow(task_id)
    assert (result.status, result.exit_code) == ("failed", 3)
    assert state.is_failed()
    (failure,) = messages(notify_listener)
    run_id = str(run_id_of(state))
    assert failure["title"] == f"✗ {name} failed on s1"
    assert failure["priority"] == 8
    body = failure["message"]
    assert f"**Task:** {name}\n**Server:** s1\n**Status:** failed (exit code 3)\n" in body
    assert f"**Duration:** {human_duration(result.duration_ms)}\n" in body
    assert "**Error:**\n~~~\nexit code 3: disk full\ndisk full\n~~~" in body
    # the tail: the last 20 lines only, in a fence longer than the tildes in it
    assert "**Output** (last 20 lines):\n~~~~~\nline 22\n" in body
    assert "line 21\n" not in body
    assert "line 40\ntick ``` ~~~~ [x](http://evil)\n~~~~~" in body
    assert body.endswith(f"[View run]({UI}/runs/flow-run/{run_id})")
    assert notify_listener.requests[0].header("X-Gotify-Key") == GOTIFY_TOKEN

    # still failing: no reminder interval, so nothing
    state, result = run_flow(task_id)
    assert result.status == "failed"
    assert len(notify_listener.requests) == 1
    task = env.task(task_id)
    assert (task.failure_streak, task.failure_notified_at is not None) == (2, True)

    marker.touch()
    state, result = run_flow(task_id)
    assert result.success and state.is_completed()
    assert len(notify_listener.requests) == 2
    recovery = messages(notify_listener)[1]
    assert recovery["title"].startswith(f"✓ {name} recovered after ")
    assert recovery["priority"] == 5
    assert "(2 failed runs since " in recovery["message"]
    assert "**Status:** success (exit code 0)" in recovery["message"]

    # and quiet again
    run_flow(task_id)
    assert len(notify_listener.requests) == 2
    task = env.task(task_id)
    assert (task.failing_since, task.failure_streak, task.failure_notified_at) == (None, 0, None)
    rows = log_rows(env.db)
    assert [(r.channel, r.event, r.status, r.ok) for r in rows] == [
        (channel, "failure", "failed", True),
        (channel, "recovery", "success", True),
    ]
    assert rows[0].task_id == task_id


@pytest.mark.sshd
def test_a_channel_that_is_down_never_fails_or_delays_the_run(
    env: RunEnv, notify_listener: NotifyListener
) -> None:
    hanging = unique("hangs")
    refused = unique("refused")
    notify_listener.hang(60)
    add_channel(env.db, name=hanging, kind="ntfy", url=notify_listener.url, topic="t")
    port = closed_port()
    add_channel(
        env.db, name=refused, kind="ntfy", url=f"http://127.0.0.1:{port}", topic="t", default=True
    )
    task_id = env.add_task(
        unique("ok"), "--local", "--timeout", "5", "--command", "echo fine", "--notify-success"
    )
    with env.db.read() as session:
        assert session.get(Task, task_id).notify is None  # type: ignore[union-attr]

    started = time.monotonic()
    state, result = run_flow(task_id)
    elapsed = time.monotonic() - started
    assert result.success and state.is_completed()  # the run's own outcome, untouched
    # its own timeout (5 s) + the notification timeout (2 s) + a few seconds, at most
    assert elapsed < 5 + 2 + 4, elapsed
    rows = {r.channel: r for r in log_rows(env.db)}
    assert set(rows) == {hanging, refused}
    assert not rows[hanging].ok and rows[hanging].error  # a read timeout, however apprise says it
    assert not rows[refused].ok and rows[refused].error
    assert rows[hanging].event == "success"
    logs = flow_logs(run_id_of(state), "Notification to")
    assert any(m.startswith(f"Notification to {hanging} failed") for m in logs), logs

    # a failing run with the channels down still fails only for its own reason
    failing = env.add_task(unique("bad"), "--local", "--timeout", "5", "--command", "exit 9")
    started = time.monotonic()
    state, result = run_flow(failing)
    assert time.monotonic() - started < 5 + 2 + 4
    assert (result.status, result.exit_code) == ("failed", 9)
    assert state.message is not None and state.message.startswith("failed: exit code 9")


@pytest.mark.sshd
def test_no_token_anywhere_in_logs_or_output(
    env: RunEnv,
    notify_listener: NotifyListener,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    gotify(env.db, notify_listener)
    ntfy = unique("ntfy")
    add_channel(
        env.db, name=ntfy, kind="ntfy", url=notify_listener.url, topic="t", token=NTFY_TOKEN,
        default=True,
    )  # fmt: skip
    task_id = env.add_task(unique("leaky"), "--local", "--command", "exit 1")

    notify_listener.fail()  # both answer 500: errors are logged and recorded
    state, _ = run_flow(task_id)
    logs = flow_logs(run_id_of(state), "Notification to")
    assert len(notify_listener.requests) == 2
    assert {r.ok for r in log_rows(env.db)} == {False}

    notify_listener.ok()
    with env.db.write() as session:
        session.execute(update(Task).values(failure_notified_at=None))  # announce again
    state, _ = run_flow(task_id)
    logs += flow_logs(run_id_of(state), "Notification sent")
    assert len(notify_listener.requests) == 4
    ntfy_request = next(r for r in notify_listener.requests[2:] if r.path == "/")
    assert ntfy_request.header("Authorization") == f"Bearer {NTFY_TOKEN}"

    out = capsys.readouterr()
    listing = env.ok("notify", "log")
    for token in (GOTIFY_TOKEN, NTFY_TOKEN):
        assert token not in caplog.text
        assert not [m for m in logs if token in m]
        assert token not in out.out + out.err
        assert token not in listing
        assert text_in_database(env.db.engine, token) == []
        for req in notify_listener.requests:
            assert token not in req.text  # never in a message either


# ----------------------------------------------------------------------------- the hook


@pytest.fixture
def hook(notify_settings: None, svrctl_env: Any, database: Database) -> tuple[Database, Settings]:
    runtime.reset()
    return database, load_settings()


def new_task(db: Database, **policy: Any) -> int:
    with db.write() as session:
        spec = TaskSpec(name=unique("t"), kind="local", command="true", timezone="UTC")
        task = add_task(session, spec)
        for key, value in policy.items():
            setattr(task, key, value)
        session.flush()
        return task.id


def finish(
    db: Database,
    settings: Settings,
    task_id: int,
    status: str,
    at: datetime,
    **extra: Any,
) -> list[DeliveryResult]:
    """Record a final row for a run on web-1 and call the hook as a finished run would."""
    row = record_final(
        db,
        task_id,
        status=RunStatus(status),
        error=extra.get("error") or "",
        triggered_by="manual",
        flow_run_id=None,
        server="web-1",
    )
    run = FinishedRun(
        task_id=task_id, status=status, history_ids=[row], duration_ms=1200, finished_at=at,
        **extra,
    )  # fmt: skip
    return notify_after_run(db, settings, run)


def titles(listener: NotifyListener) -> list[str]:
    return [m["title"] for m in messages(listener)]


def test_threshold_reminders_and_recovery_through_the_hook(
    hook: tuple[Database, Settings], notify_listener: NotifyListener
) -> None:
    db, settings = hook
    gotify(db, notify_listener)
    task_id = new_task(db, notify_after_failures=2, notify_remind_hours=1.0)
    minutes = [0, 1, 30, 61, 62, 125]
    for m in minutes:
        finish(db, settings, task_id, "failed", T0 + timedelta(minutes=m), error="boom")
    finish(db, settings, task_id, "skipped", T0 + timedelta(minutes=126))
    finish(db, settings, task_id, "cancelled", T0 + timedelta(minutes=127))
    finish(db, settings, task_id, "success", T0 + timedelta(minutes=180))
    with db.read() as session:
        name = session.get(Task, task_id).name  # type: ignore[union-attr]
    assert titles(notify_listener) == [
        f"✗ {name} failed on web-1 (2 runs in a row)",
        f"✗ {name} still failing (4 runs since 2026-03-01 12:00 UTC)",
        f"✗ {name} still failing (6 runs since 2026-03-01 12:00 UTC)",
        f"✓ {name} recovered after 3 h",
    ]
    assert [m["priority"] for m in messages(notify_listener)] == [8, 5, 5, 5]  # gotify: 7 → 5


def test_missed_findings_and_the_tasks_own_channels(
    hook: tuple[Database, Settings], notify_listener: NotifyListener
) -> None:
    db, settings = hook
    default = gotify(db, notify_listener)
    own = unique("own")
    add_channel(db, name=own, kind="ntfy", url=notify_listener.url, topic="mine")
    plain = new_task(db)
    mine = new_task(db, notify=[own])

    finish(db, settings, plain, "missed", T0, error="missed: due at 12:00, started 5 min late")
    finish(db, settings, mine, "success", T0, output="3 updates\npkg-a\n", finding=True,
           finding_priority=9)  # fmt: skip
    finish(db, settings, mine, "success", T0)  # no finding, no opt-in: nothing

    first, second = notify_listener.requests
    assert first.path == "/message" and first.json()["priority"] == 5  # missed 6: gotify normal
    assert "missed a run" in first.json()["title"]
    assert "missed: due at 12:00" in first.json()["message"]
    assert (second.path, second.json()["topic"]) == ("/", "mine")
    assert second.json()["title"].endswith(": 3 updates")
    assert second.header("X-Priority") == "max"  # the plugin's 9
    assert [(r.channel, r.event) for r in log_rows(db)] == [(default, "missed"), (own, "finding")]


def test_two_runs_finishing_together_announce_once(
    hook: tuple[Database, Settings], notify_listener: NotifyListener
) -> None:
    db, settings = hook
    gotify(db, notify_listener)
    task_id = new_task(db)
    count = 6
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            row = record_final(
                db, task_id, status=RunStatus.FAILED, error="x", triggered_by="manual",
                flow_run_id=None, server=f"s{i}",
            )  # fmt: skip
            barrier.wait()
            run = FinishedRun(task_id=task_id, status="failed", history_ids=[row])
            notify_after_run(db, settings, run)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(notify_listener.requests) == 1
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.failure_streak == count


def test_reconciled_crash_is_announced_once(
    hook: tuple[Database, Settings], notify_listener: NotifyListener
) -> None:
    db, settings = hook
    gotify(db, notify_listener)
    task_id = new_task(db)
    dead = str(uuid.uuid4())
    ids = begin_attempt(
        db, task_id, servers=["a", "b"], attempt=1, triggered_by="schedule", flow_run_id=dead
    )
    assert isinstance(ids, list)

    async def gone(_: UUID) -> str | None:
        return None

    assert sorted(asyncio.run(reconcile_running(db, gone, settings))) == sorted(ids)
    assert asyncio.run(reconcile_running(db, gone, settings)) == []
    (req,) = notify_listener.requests
    data = req.json()
    assert data["title"].endswith("crashed on a, b")
    assert "its Prefect flow run no longer exists" in data["message"]
    assert f"[View run]({UI}/runs/flow-run/{dead})" in data["message"]
    (row,) = log_rows(db)
    assert (row.event, row.status, row.flow_run_id) == ("failure", "crashed", dead)


def test_the_hook_never_raises(hook: tuple[Database, Settings]) -> None:
    db, settings = hook
    # no channel at all, a task that is gone, a running status: nothing, no error
    task_id = new_task(db)
    assert finish(db, settings, task_id, "failed", T0) == []
    assert notify_after_run(db, settings, FinishedRun(task_id=999_999, status="failed")) == []
    assert notify_after_run(db, settings, FinishedRun(task_id=task_id, status="running")) == []
    assert notify_after_run(db, settings, FinishedRun(task_id=task_id, status="bogus")) == []
