"""The ``summary-report`` flow: what ran, what failed and what comes next, daily or weekly.

Its two static deployments (``summary-report/daily`` and ``summary-report/weekly``)
are declared in the repository's ``prefect.yaml``. A run gathers the period's
history (:func:`gather_summary`), sends the summary to the notification channels
marked for summaries, and shows the same text as a markdown artifact in Prefect's
UI. See docs/notification-policy.md.

A *run* is one run of a task, whatever its attempts and servers: the history rows
of one flow run (rows written outside Prefect, which have no flow run, are grouped
by attempt and server). Its status follows the engine's rules: cancelled if any
server's last attempt was cancelled, skipped if all skipped, else a success when
enough servers succeeded (the task's ``min_success``), else a failure. The success
rate counts successes among the runs that succeeded or failed; skipped, cancelled
and missed runs are listed but not in the rate.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import anyio
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from sqlalchemy import or_, select

from svrctl.db.engine import Database
from svrctl.db.models import RunStatus, Task, TaskHistory, utcnow
from svrctl.notify.messages import (
    FailingTask,
    MissedRun,
    NextRun,
    SlowTask,
    Summary,
    TaskCounts,
    summary_notice,
)
from svrctl.runtime import app_database, app_settings

__all__ = ["PERIODS", "gather_summary", "period_hours", "summary_report"]

# Hours each named period covers.
PERIODS = {"daily": 24.0, "weekly": 168.0}
_FAILURE_STATUSES = [s.value for s in RunStatus if s.counts_as_failure]


def period_hours(period: str | float) -> tuple[str, float]:
    """Return the label and length in hours of a period: daily, weekly or a number of hours."""
    if isinstance(period, str) and period.strip().lower() in PERIODS:
        label = period.strip().lower()
        return label, PERIODS[label]
    try:
        hours = float(str(period).strip().removesuffix("h"))
    except ValueError:
        raise ValueError(
            f"invalid period {period!r}: use daily, weekly or a number of hours"
        ) from None
    if not 0 < hours <= 24 * 366:
        raise ValueError(f"invalid period {period!r}: the hours must be between 0 and 8784")
    return f"{hours:g}-hour", hours


@dataclass
class _Run:
    """The history rows of one run of a task."""

    task_id: int
    rows: list[TaskHistory] = field(default_factory=list)
    servers: set[str | None] = field(default_factory=set)


def _group(rows: list[TaskHistory]) -> list[_Run]:
    """Group history rows (oldest first) into runs."""
    by_flow: dict[tuple[int, str], _Run] = {}
    current: dict[int, _Run] = {}  # rows without a flow run: the task's latest run
    runs: list[_Run] = []
    for row in rows:
        run: _Run | None
        if row.flow_run_id:
            key = (row.task_id, row.flow_run_id)
            run = by_flow.get(key)
            if run is None:
                run = by_flow[key] = _Run(row.task_id)
                runs.append(run)
        else:
            run = current.get(row.task_id)
            if run is None or not _joins(run, row):
                run = current[row.task_id] = _Run(row.task_id)
                runs.append(run)
        run.rows.append(row)
        run.servers.add(row.server_name)
    return runs


def _joins(run: _Run, row: TaskHistory) -> bool:
    """Tell whether a row without a flow run belongs to the task's latest such run.

    A retry does; so does the first attempt on another server while the run has only
    first attempts (a fan-out writes them together); anything else starts a new run.
    """
    if row.attempt > 1:
        return True
    return (
        row.server_name is not None
        and None not in run.servers
        and row.server_name not in run.servers
        and all(r.attempt == 1 for r in run.rows)
    )


def _status(run: _Run, min_success: int | None) -> RunStatus | None:
    """Return a run's status from its rows (None while it is still running)."""
    if any(r.status == RunStatus.RUNNING.value for r in run.rows):
        return None
    last: dict[str | None, TaskHistory] = {}
    for row in run.rows:
        if row.server_name not in last or row.attempt >= last[row.server_name].attempt:
            last[row.server_name] = row
    statuses = [RunStatus(r.status) for r in last.values()]
    if RunStatus.CANCELLED in statuses:
        return RunStatus.CANCELLED
    if RunStatus.MISSED in statuses:
        return RunStatus.MISSED
    skipped = statuses.count(RunStatus.SKIPPED)
    if skipped == len(statuses):
        return RunStatus.SKIPPED
    ok = statuses.count(RunStatus.SUCCESS)
    needed = min_success if min_success is not None else len(statuses) - skipped
    return RunStatus.SUCCESS if ok >= needed else RunStatus.FAILED


def gather_summary(
    db: Database, *, start: datetime, end: datetime, label: str, now: datetime | None = None
) -> Summary:
    """Return what the summary of ``[start, end)`` says; runs count by when they started."""
    now = now or utcnow()
    summary = Summary(label=label, start=start, end=end)
    with db.read() as session:
        tasks = {t.id: t for t in session.scalars(select(Task))}
        rows = list(
            session.scalars(
                select(TaskHistory)
                .where(TaskHistory.started_at >= start, TaskHistory.started_at < end)
                .order_by(TaskHistory.id)
            )
        )
        counts: dict[int, TaskCounts] = {}
        durations: dict[int, list[int]] = defaultdict(list)
        for run in _group(rows):
            task = tasks.get(run.task_id)
            if task is None:
                continue
            status = _status(run, task.min_success)
            if status is None:
                continue
            c = counts.setdefault(task.id, TaskCounts(task.name))
            c.runs += 1
            if status is RunStatus.SUCCESS:
                c.successes += 1
            elif status is RunStatus.MISSED:
                c.missed += 1
                first = run.rows[0]
                summary.missed.append(MissedRun(task.name, first.started_at, first.error))
            elif status is RunStatus.SKIPPED:
                c.skipped += 1
            elif status is RunStatus.CANCELLED:
                c.cancelled += 1
            else:
                c.failures += 1
            if status in (RunStatus.SUCCESS, RunStatus.FAILED):
                durations[task.id].append(max(r.duration_ms or 0 for r in run.rows))
        summary.tasks = sorted(counts.values(), key=lambda t: t.name)
        summary.slowest = sorted(
            (
                SlowTask(tasks[i].name, max(d), int(sum(d) / len(d)), len(d))
                for i, d in durations.items()
            ),
            key=lambda s: (-s.longest_ms, s.name),
        )
        summary.missed.sort(key=lambda m: (m.at, m.name))

        failing = session.scalars(
            select(Task)
            .where(or_(Task.failure_streak > 0, Task.last_status.in_(_FAILURE_STATUSES)))
            .order_by(Task.name)
        )
        for task in failing:
            last_failed = session.scalars(
                select(TaskHistory)
                .where(
                    TaskHistory.task_id == task.id,
                    TaskHistory.status.in_(_FAILURE_STATUSES),
                )
                .order_by(TaskHistory.id.desc())
                .limit(1)
            ).first()
            summary.failing.append(
                FailingTask(
                    name=task.name,
                    since=task.failing_since or task.last_run_at,
                    streak=max(task.failure_streak, 1),
                    last_status=task.last_status,
                    error=last_failed.error if last_failed is not None else None,
                )
            )
        summary.upcoming = [
            NextRun(t.name, t.next_run_at)
            for t in session.scalars(
                select(Task)
                .where(Task.enabled.is_(True), Task.next_run_at >= now)
                .order_by(Task.next_run_at, Task.name)
                .limit(20)
            )
            if t.next_run_at is not None
        ]
    return summary


def _artifact_key(label: str) -> str:
    return "svrctl-summary-" + (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "report")


@flow(
    name="summary-report",
    description="Send the daily or weekly summary of svrctl's runs to the summary channels.",
    persist_result=False,
    validate_parameters=True,
)
async def summary_report(period: Literal["daily", "weekly"] | float = "daily") -> str:
    """Summarise the period's runs, send it to the summary channels, and return its text.

    Args:
        period: ``daily`` (the last 24 hours), ``weekly`` (the last 7 days) or a number
            of hours.
    """
    from svrctl.notify.deliver import deliver

    logger = get_run_logger()
    settings = app_settings()
    db = app_database(settings)
    label, hours = period_hours(period)
    end = utcnow()
    start = end - timedelta(hours=hours)
    summary = await anyio.to_thread.run_sync(
        lambda: gather_summary(db, start=start, end=end, label=label, now=end)
    )
    try:
        zone = ZoneInfo(settings.timezone)
    except Exception:
        zone = ZoneInfo("UTC")
    notice = summary_notice(summary, zone)
    await acreate_markdown_artifact(
        markdown=notice.body, key=_artifact_key(label), description=notice.title
    )
    results = await anyio.to_thread.run_sync(
        lambda: deliver(db, settings, notice, None, summaries=True)
    )
    if not results:
        logger.warning(
            "No notification channel is marked for summaries: the summary is only in the "
            "artifact (`svrctl notify edit NAME --summaries` marks one)"
        )
    for r in results:
        if r.ok:
            logger.info("Summary sent to %s", r.channel)
        else:
            logger.warning("Summary to %s failed: %s", r.channel, r.error)
    logger.info("%s", notice.title)
    return notice.body
