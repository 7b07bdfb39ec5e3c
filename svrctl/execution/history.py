"""History rows and task stats: written so that no run is lost or counted twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from svrctl.db.engine import Database
from svrctl.db.models import RunStatus, Task, TaskHistory, utcnow

if TYPE_CHECKING:
    from svrctl.plugin import Metric

__all__ = [
    "Outcome",
    "begin_attempt",
    "finish_attempt",
    "record_final",
    "running_rows",
    "update_stats",
]


@dataclass
class Outcome:
    """How one attempt on one host ended."""

    status: RunStatus
    exit_code: int | None = None
    output: str = ""
    output_truncated: bool = False
    output_bytes: int = 0
    error: str | None = None
    error_truncated: bool = False
    error_bytes: int = 0
    duration_ms: int = 0
    # what a plugin step found beyond its output
    metrics: list[Metric] = field(default_factory=list)
    notify: bool = False
    priority: int | None = None


def running_rows(db: Database, task_id: int) -> list[TaskHistory]:
    """Return the task's rows still marked running."""
    with db.read() as session:
        return list(
            session.scalars(
                select(TaskHistory).where(
                    TaskHistory.task_id == task_id, TaskHistory.status == RunStatus.RUNNING.value
                )
            )
        )


def begin_attempt(
    db: Database,
    task_id: int,
    *,
    servers: list[str | None],
    attempt: int,
    triggered_by: str,
    flow_run_id: str | None,
    skip_if_running: bool = False,
) -> list[int] | str:
    """Insert one ``running`` row per server and return their ids.

    With ``skip_if_running`` the check for another running run and the insert
    happen in one write transaction that locks the task row, so two runs that
    start together cannot both see "nothing running". Then the reason is
    returned instead of ids when another run is still going.
    """
    with db.write() as session:
        session.scalar(select(Task.id).where(Task.id == task_id).with_for_update())
        if skip_if_running:
            other = session.scalar(
                select(TaskHistory)
                .where(
                    TaskHistory.task_id == task_id,
                    TaskHistory.status == RunStatus.RUNNING.value,
                )
                .limit(1)
            )
            if other is not None:
                return (
                    f"skipped: run {other.flow_run_id or other.id} of this task is still "
                    f"running (since {other.started_at:%Y-%m-%d %H:%M:%S} UTC) and its "
                    "overlap policy is 'skip'"
                )
        rows = [
            TaskHistory(
                task_id=task_id,
                flow_run_id=flow_run_id,
                server_name=server,
                attempt=attempt,
                triggered_by=triggered_by,
                status=RunStatus.RUNNING.value,
                started_at=utcnow(),
            )
            for server in servers
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def finish_attempt(db: Database, row_id: int, outcome: Outcome) -> None:
    """Complete a running row with its outcome."""
    with db.write() as session:
        row = session.get(TaskHistory, row_id)
        if row is None:
            return
        _fill(row, outcome)


def _fill(row: TaskHistory, outcome: Outcome) -> None:
    row.status = outcome.status.value
    # a skipped target (its --only-if check said no) is neither a success nor a failure
    row.success = (
        None if outcome.status is RunStatus.SKIPPED else outcome.status is RunStatus.SUCCESS
    )
    row.exit_code = outcome.exit_code
    row.output = outcome.output
    row.output_truncated = outcome.output_truncated
    row.output_bytes = outcome.output_bytes
    row.error = outcome.error
    row.error_truncated = outcome.error_truncated
    row.error_bytes = outcome.error_bytes
    row.duration_ms = outcome.duration_ms
    row.finished_at = utcnow()


def record_final(
    db: Database,
    task_id: int,
    *,
    status: RunStatus,
    error: str,
    triggered_by: str,
    flow_run_id: str | None,
    server: str | None = None,
) -> int:
    """Write a row that is final from the start (missed, or refused) and return its id."""
    with db.write() as session:
        now = utcnow()
        row = TaskHistory(
            task_id=task_id,
            flow_run_id=flow_run_id,
            server_name=server,
            attempt=1,
            triggered_by=triggered_by,
            status=status.value,
            success=False,
            error=error,
            duration_ms=0,
            started_at=now,
            finished_at=now,
        )
        session.add(row)
        session.flush()
        return row.id


def update_stats(
    db: Database,
    task_id: int,
    *,
    status: RunStatus,
    finished_at: datetime,
    duration_ms: int,
) -> None:
    """Count one finished run in the task's stats (one atomic UPDATE) and set its next run.

    Every run counts in ``run_count``; ``skipped`` (and ``missed``, ``cancelled``)
    count neither as a success nor as a failure.
    """
    from svrctl.tasks import next_runs

    success = status is RunStatus.SUCCESS
    failure = status.counts_as_failure
    with db.write() as session:
        task = session.get(Task, task_id)
        if task is None:
            return
        upcoming = next_runs(task.schedule, task.timezone, 1) if task.enabled else []
        next_run_at = upcoming[0] if upcoming else None
        session.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(
                run_count=Task.run_count + 1,
                success_count=Task.success_count + (1 if success else 0),
                failure_count=Task.failure_count + (1 if failure else 0),
                last_run_at=finished_at,
                last_status=status.value,
                last_duration_ms=duration_ms,
                next_run_at=next_run_at,
                updated=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
