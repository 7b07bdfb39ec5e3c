"""The summary report over a seeded history: its numbers, its text, and the flow end to end."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures.notify_listener import NotifyListener
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import State
from sqlalchemy import select

from svrctl import runtime
from svrctl.db.engine import Database
from svrctl.db.models import NotificationLog, TaskHistory
from svrctl.flows.summary import gather_summary, period_hours, summary_report
from svrctl.notify.channels import add_channel
from svrctl.notify.messages import summary_notice, summary_text
from svrctl.specs import TaskSpec
from svrctl.tasks import add_task

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # the end of the period
START = T0 - timedelta(hours=24)


def task(db: Database, name: str, **fields: Any) -> int:
    with db.write() as session:
        spec = TaskSpec(name=name, kind="local", command="true", timezone="UTC")
        row = add_task(session, spec)
        for key, value in fields.items():
            setattr(row, key, value)
        session.flush()
        return row.id


def row(
    db: Database,
    task_id: int,
    status: str,
    at: datetime,
    duration_ms: int = 1000,
    *,
    run: str | None = None,
    server: str | None = "h1",
    attempt: int = 1,
    error: str | None = None,
) -> None:
    """Insert one history row that started at ``at``."""
    with db.write() as session:
        session.add(
            TaskHistory(
                task_id=task_id,
                flow_run_id=run,
                server_name=server,
                attempt=attempt,
                triggered_by="schedule",
                status=status,
                success=status == "success",
                duration_ms=duration_ms,
                error=error,
                started_at=at,
                finished_at=None
                if status == "running"
                else at + timedelta(milliseconds=duration_ms),
            )
        )


def seed(db: Database, end: datetime = T0) -> None:
    """A day of history for four tasks (see the comments for what each run is)."""
    h = lambda hours: end - timedelta(hours=hours)  # noqa: E731
    backup = task(db, "backup", next_run_at=end + timedelta(hours=1))
    # 4 runs: 3 successes (one after a retry) and 1 failure after a retry; 1 still running
    row(db, backup, "success", h(20), 1000, run="b1")
    row(db, backup, "success", h(16), 2000, run="b2")
    row(db, backup, "failed", h(12), 500, run="b3", error="first try")
    row(db, backup, "success", h(12), 4000, run="b3", attempt=2)
    row(db, backup, "failed", h(8), 9000, run="b4", error="disk full")
    row(db, backup, "timed_out", h(8), 7000, run="b4", attempt=2, error="too slow")
    row(db, backup, "running", h(0.1), 0, run="b5")
    row(db, backup, "success", h(30), 60_000, run="b0")  # before the period
    row(db, backup, "failed", end + timedelta(minutes=1), run="b6")  # after it

    web = task(db, "web", next_run_at=end + timedelta(minutes=30))
    # a fan-out on 3 servers: one failed, so the run failed; then one good run; then a
    # good run outside Prefect (rows without a flow run)
    for server, status in (("a", "success"), ("b", "success"), ("c", "failed")):
        row(db, web, status, h(10), 3000, run="w1", server=server)
    for server in "abc":
        row(db, web, "success", h(5), 2500, run="w2", server=server)
    for server in "abc":
        row(db, web, "success", h(2), 2000, server=server)

    sync = task(db, "sync", next_run_at=end - timedelta(hours=1))  # stale: not listed
    row(db, sync, "missed", h(9), 0, run="s1", server=None, error="missed: due at 22:00")
    row(db, sync, "skipped", h(6), 100, run="s2")
    row(db, sync, "cancelled", h(4), 100, run="s3")
    row(db, sync, "success", h(3), 700, run="s4")

    task(
        db,
        "old",
        failing_since=end - timedelta(days=3),
        failure_streak=3,
        last_status="failed",
        next_run_at=end + timedelta(hours=2),
        enabled=False,  # disabled: no next run
    )
    task(db, "quiet", last_status="success", next_run_at=end + timedelta(hours=3))
    row(db, task(db, "gone-wrong", last_status="timed_out"), "timed_out", h(40), error="late")


def test_summary_numbers(database: Database) -> None:
    seed(database)
    summary = gather_summary(database, start=START, end=T0, label="daily", now=T0)

    counts = {t.name: t for t in summary.tasks}
    assert sorted(counts) == ["backup", "sync", "web"]
    got = {
        n: (t.runs, t.successes, t.failures, t.missed, t.skipped, t.cancelled, t.success_rate)
        for n, t in counts.items()
    }
    assert got == {
        "backup": (4, 3, 1, 0, 0, 0, "75%"),
        "web": (3, 2, 1, 0, 0, 0, "66.7%"),
        "sync": (4, 1, 0, 1, 1, 1, "100%"),
    }
    assert (summary.runs, summary.successes, summary.failures) == (11, 6, 2)

    assert [(f.name, f.streak, f.since, f.last_status) for f in summary.failing] == [
        ("gone-wrong", 1, None, "timed_out"),
        ("old", 3, T0 - timedelta(days=3), "failed"),
    ]
    assert summary.failing[0].error == "late"

    # longest: each run's slowest row; average over runs that succeeded or failed
    assert [(s.name, s.longest_ms, s.average_ms, s.runs) for s in summary.slowest] == [
        ("backup", 9000, 4000, 4),  # (1000 + 2000 + 4000 + 9000) / 4
        ("web", 3000, 2500, 3),
        ("sync", 700, 700, 1),
    ]
    assert [(m.name, m.at, m.reason) for m in summary.missed] == [
        ("sync", T0 - timedelta(hours=9), "missed: due at 22:00")
    ]
    assert [(n.name, n.at) for n in summary.upcoming] == [
        ("web", T0 + timedelta(minutes=30)),
        ("backup", T0 + timedelta(hours=1)),
        ("quiet", T0 + timedelta(hours=3)),
    ]


def test_summary_text(database: Database) -> None:
    seed(database)
    summary = gather_summary(database, start=START, end=T0, label="daily", now=T0)
    title, body = summary_text(summary)
    assert title == "svrctl daily summary: 11 runs, 2 failures, 75% success"
    assert body == "\n".join(
        [
            "## svrctl daily summary",
            "2026-03-01 07:00 UTC to 2026-03-02 07:00 UTC",
            "",
            "**11 runs, 2 failures, 75% success** (3 tasks ran)",
            "",
            "### Runs per task",
            "- backup: 4 runs, 1 failure, 75% success",
            "- web: 3 runs, 1 failure, 66.7% success",
            "- sync: 4 runs, 0 failures, 100% success, 1 missed, 1 skipped, 1 cancelled",
            "",
            "### Failing now",
            "- gone-wrong: 1 failed run in a row, last timed\\_out: late",
            "- old: 3 failed runs in a row since 2026-02-27 07:00 UTC, last failed",
            "",
            "### Slowest tasks",
            "- backup: longest 9.0 s, average 4.0 s (4 runs)",
            "- web: longest 3.0 s, average 2.5 s (3 runs)",
            "- sync: longest 700 ms, average 700 ms (1 run)",
            "",
            "### Missed runs",
            "- sync at 2026-03-01 22:00 UTC: missed: due at 22:00",
            "",
            "### Next runs",
            "- web: 2026-03-02 07:30 UTC",
            "- backup: 2026-03-02 08:00 UTC",
            "- quiet: 2026-03-02 10:00 UTC",
        ]
    )
    notice = summary_notice(summary)
    assert (notice.event.value, notice.priority, notice.title) == ("summary", 5, title)


def test_a_quiet_period(database: Database) -> None:
    summary = gather_summary(database, start=START, end=T0, label="weekly", now=T0)
    title, body = summary_text(summary)
    assert title == "svrctl weekly summary: 0 runs, 0 failures, - success"
    for part in ("### Runs per task\n- no runs", "### Failing now\n- none", "- none scheduled"):
        assert part in body
    assert summary_notice(summary).priority == 3


def test_periods() -> None:
    assert period_hours("daily") == ("daily", 24.0)
    assert period_hours("weekly") == ("weekly", 168.0)
    assert period_hours(6) == ("6-hour", 6.0)
    assert period_hours("12h") == ("12-hour", 12.0)
    for bad in ("monthly", 0, -1):
        with pytest.raises(ValueError, match="invalid period"):
            period_hours(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the flow


def read_artifact_data(run_id: uuid.UUID, key: str) -> list[Any]:
    async def read() -> list[Any]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                    key=ArtifactFilterKey(any_=[key]),
                )
            )
            return [a.data for a in found]

    return asyncio.run(read())


def test_summary_report_flow_sends_to_the_summary_channels(
    prefect_api: str,
    svrctl_env: Any,
    database: Database,
    notify_listener: NotifyListener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SVRCTL_NOTIFY_TIMEOUT_SECONDS", "5")
    runtime.reset()
    suffix = uuid.uuid4().hex[:8]
    summaries = f"sum-{suffix}"
    alerts = f"alerts-{suffix}"
    # the default channel gets no summary; the summary channel does
    add_channel(database, name=alerts, kind="ntfy", url=notify_listener.url, topic="alerts")
    add_channel(
        database, name=summaries, kind="ntfy", url=notify_listener.url, topic="daily",
        summaries=True,
    )  # fmt: skip
    now = datetime.now(UTC)
    seed(database, end=now)
    try:
        state: State[Any] = asyncio.run(summary_report(period="daily", return_state=True))
    finally:
        runtime.reset()
    assert state.is_completed(), state.message
    text = state.result()
    assert isinstance(text, str)

    (req,) = notify_listener.requests
    sent = req.json()
    assert sent["topic"] == "daily"
    assert sent["title"] == "svrctl daily summary: 11 runs, 2 failures, 75% success"
    assert sent["message"] == text
    assert "- backup: 4 runs, 1 failure, 75% success" in text
    assert req.header("X-Actions") is None  # no run link on a summary

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    assert read_artifact_data(run_id, "svrctl-summary-daily") == [text]

    with database.read() as session:
        logged = [(r.channel, r.event, r.ok) for r in session.scalars(select(NotificationLog))]
    assert logged == [(summaries, "summary", True)]
