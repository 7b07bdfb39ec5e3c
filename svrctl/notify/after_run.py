"""The hook every finished run calls: update the task's failure streak, then notify.

``run-task`` calls :func:`notify_after_run` once ``execute_task`` has returned (every
history row of the run is final), and reconciliation calls it for each run it
finishes as crashed. The hook:

1. in one write transaction that locks the task's row (``SELECT ... FOR UPDATE`` on
   PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), reads the task's policy and streak,
   lets :func:`svrctl.notify.policy.decide` judge the run, and writes the new streak.
   Two runs that finish together are judged one after the other, so a failure, a
   reminder or a recovery is announced once;
2. after that transaction, builds the notice and hands it to
   :func:`svrctl.notify.deliver.deliver`, which sends it to the task's channels (the
   default set when it names none) within the notification timeout and records it
   in the notification log.

It never raises: a notification problem is logged (secrets redacted) and the run is
not affected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from svrctl.db.engine import Database
from svrctl.db.models import RunStatus, Server, Task, TaskHistory, utcnow
from svrctl.notify import DeliveryResult
from svrctl.notify.messages import RunDetails, run_notice
from svrctl.notify.policy import Decision, RunOutcome, Streak, TaskPolicy, decide
from svrctl.settings import Settings

if TYPE_CHECKING:
    from svrctl.execution.engine import TaskExecutionResult

__all__ = ["FinishedRun", "judge", "notify_after_run", "run_from_result"]

log = logging.getLogger("svrctl.notify")

# How many server names a notice lists before it says "and N more".
_SERVERS_LISTED = 5


@dataclass
class FinishedRun:
    """One finished run of a task, as the hook needs it.

    Attributes:
        task_id: The task.
        status: The run's final status.
        flow_run_id: Its Prefect flow run, when it had one.
        history_ids: Its history rows (found by flow run when empty).
        duration_ms: How long it took.
        exit_code: Its exit code, when it had one.
        error: Its error text.
        output: Its output.
        finding: A plugin result asked to notify.
        finding_priority: At this priority.
        finished_at: When it finished (default: its rows' last finish, else now).
    """

    task_id: int
    status: str
    flow_run_id: str | None = None
    history_ids: list[int] = field(default_factory=list)
    duration_ms: int | None = None
    exit_code: int | None = None
    error: str | None = None
    output: str = ""
    finding: bool = False
    finding_priority: int | None = None
    finished_at: datetime | None = None


def run_from_result(result: TaskExecutionResult, flow_run_id: str | None) -> FinishedRun:
    """Return the hook's view of a run ``execute_task`` returned."""
    return FinishedRun(
        task_id=result.task_id,
        status=result.status,
        flow_run_id=flow_run_id,
        history_ids=list(result.history_ids),
        duration_ms=result.duration_ms,
        exit_code=result.exit_code,
        error=result.error,
        output=result.output,
        finding=result.notify,
        finding_priority=result.priority,
    )


@dataclass
class _Judged:
    decision: Decision
    details: RunDetails
    channels: list[str] | None


def notify_after_run(db: Database, settings: Settings, run: FinishedRun) -> list[DeliveryResult]:
    """Judge ``run``, update its task's streak and send what it deserves; never raises.

    Returns the delivery results (empty when nothing was sent).
    """
    try:
        judged = judge(db, run)
        if judged is None or judged.decision.event is None:
            return []
        from svrctl.notify.deliver import deliver, run_url

        try:
            judged.details.run_url = run_url(settings, run.flow_run_id)
        except Exception:  # a link is a nicety
            log.debug("cannot build the run link", exc_info=True)
        notice = run_notice(judged.details, judged.decision, _zone(settings))
        return deliver(db, settings, notice, judged.channels)
    except Exception as exc:
        log.warning(
            "cannot send the notifications of a run of task %s: %s",
            run.task_id,
            _redacted(f"{exc.__class__.__name__}: {exc}"),
        )
        return []


def judge(db: Database, run: FinishedRun) -> _Judged | None:
    """Decide about ``run`` and store the task's new streak, in one locked transaction."""
    status = RunStatus(run.status)
    if not status.final:
        return None
    rows = _rows(db, run)
    finished = run.finished_at or max(
        (r.finished_at for r in rows if r.finished_at is not None), default=None
    )
    at = finished or utcnow()
    with db.write() as session:
        task = session.scalars(
            select(Task).where(Task.id == run.task_id).with_for_update()
        ).one_or_none()
        if task is None:
            return None
        policy = TaskPolicy(
            after_failures=task.notify_after_failures,
            remind_hours=task.notify_remind_hours,
            on_success=task.notify_on_success,
        )
        streak = Streak(task.failing_since, task.failure_streak, task.failure_notified_at)
        decision = decide(policy, streak, RunOutcome(status, at, run.finding, run.finding_priority))
        if decision.changed:
            new = decision.streak
            session.execute(
                update(Task)
                .where(Task.id == task.id)
                .values(
                    failing_since=new.failing_since,
                    failure_streak=new.count,
                    failure_notified_at=new.notified_at,
                )
            )
        if decision.event is None:
            return _Judged(decision, _details(run, task, "", at), None)
        server = _where(session, task, rows, status)
        return _Judged(decision, _details(run, task, server, at), list(task.notify or []) or None)


def _details(run: FinishedRun, task: Task, server: str, at: datetime) -> RunDetails:
    return RunDetails(
        task_id=task.id,
        task_name=task.name,
        server=server,
        status=run.status,
        finished_at=at,
        duration_ms=run.duration_ms,
        exit_code=run.exit_code,
        error=run.error,
        output=run.output,
        flow_run_id=run.flow_run_id,
    )


def _rows(db: Database, run: FinishedRun) -> list[TaskHistory]:
    """Return the run's history rows, oldest first."""
    with db.read() as session:
        query = select(TaskHistory).where(TaskHistory.task_id == run.task_id)
        if run.history_ids:
            query = query.where(TaskHistory.id.in_(run.history_ids))
        elif run.flow_run_id:
            query = query.where(TaskHistory.flow_run_id == run.flow_run_id)
        else:
            return []
        return list(session.scalars(query.order_by(TaskHistory.id)))


def _where(session: Session, task: Task, rows: list[TaskHistory], status: RunStatus) -> str:
    """Name where the run ran; for a failure, the servers whose last attempt failed."""
    last: dict[str, TaskHistory] = {}
    for row in rows:
        if row.server_name:
            last[row.server_name] = row  # rows are oldest first: the last attempt wins
    names = list(last)
    if status.counts_as_failure:
        failed = [n for n, r in last.items() if RunStatus(r.status).counts_as_failure]
        names = failed or names
    if not names:
        if task.server_tag:
            return f"servers tagged {task.server_tag}"
        if task.server_id is not None:
            server = session.get(Server, task.server_id)
            return server.name if server is not None else ""
        return "local"
    shown = names[:_SERVERS_LISTED]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return ", ".join(shown) + more


def _zone(settings: Settings) -> tzinfo:
    try:
        return ZoneInfo(settings.timezone)
    except Exception:
        return ZoneInfo("UTC")


def _redacted(text: str) -> str:
    try:
        from svrctl.notify.channels import redact

        return redact(text) or text
    except Exception:
        return text
