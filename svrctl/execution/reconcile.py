"""Finish rows left ``running`` by a process that died, and purge old history."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from uuid import UUID

import anyio
from sqlalchemy import select

from svrctl.db.engine import Database
from svrctl.db.models import RunStatus, TaskHistory, utcnow
from svrctl.db.purge import purge_before
from svrctl.execution.history import update_stats
from svrctl.settings import Settings

__all__ = ["FlowRunState", "purge_history", "reconcile_running"]

log = logging.getLogger("svrctl.reconcile")

# Returns the Prefect state type of a flow run ("RUNNING", "COMPLETED", ...), or None if gone.
FlowRunState = Callable[[UUID], Awaitable[str | None]]

_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


async def reconcile_running(
    db: Database,
    state_of: FlowRunState,
    settings: Settings | None = None,
    *,
    task_id: int | None = None,
) -> list[int]:
    """Mark ``crashed`` (or ``cancelled``) every running row whose flow run is over or gone.

    Each affected run is counted once in its task's stats, then goes through the
    notification hook like a run that finished by itself (``settings`` default to the
    process's). With ``task_id``, only that task's rows are looked at. Returns the row
    ids changed.
    """
    query = select(TaskHistory).where(
        TaskHistory.status == RunStatus.RUNNING.value,
        TaskHistory.flow_run_id.is_not(None),
    )
    if task_id is not None:
        query = query.where(TaskHistory.task_id == task_id)
    with db.read() as session:
        rows = list(session.scalars(query))
    changed: dict[int, RunStatus] = {}
    verdicts: dict[str, str | None] = {}
    for row in rows:
        run_id = row.flow_run_id or ""
        if run_id not in verdicts:
            try:
                verdicts[run_id] = await state_of(UUID(run_id))
            except ValueError:
                verdicts[run_id] = None
        state = verdicts[run_id]
        if state is not None and state not in _FINAL:
            continue
        status = RunStatus.CANCELLED if state == "CANCELLED" else RunStatus.CRASHED
        why = (
            "its Prefect flow run no longer exists"
            if state is None
            else f"its Prefect flow run ended {state} while this row was still running"
        )
        if _finish(db, row.id, status, f"{status.value}: {why} (the process running it died)"):
            changed[row.id] = status
    counted: dict[tuple[int, str], list[TaskHistory]] = {}
    for row in rows:
        key = (row.task_id, row.flow_run_id or "")
        if row.id in changed and key not in counted:
            counted[key] = []
            update_stats(
                db,
                row.task_id,
                status=changed[row.id],
                finished_at=utcnow(),
                duration_ms=int((utcnow() - row.started_at).total_seconds() * 1000),
            )
        if row.id in changed:
            counted[key].append(row)
    for row_id, status in changed.items():
        log.warning("history row %d marked %s", row_id, status.value)
    for group in counted.values():
        await _notify(db, settings, group, changed[group[0].id])
    return list(changed)


async def _notify(
    db: Database, settings: Settings | None, rows: list[TaskHistory], status: RunStatus
) -> None:
    """Run the notification hook for one run finished here; never raises."""
    try:
        from svrctl.notify.after_run import FinishedRun, notify_after_run

        if settings is None:
            from svrctl.runtime import app_settings

            settings = app_settings()
        first = rows[0]
        run = FinishedRun(
            task_id=first.task_id,
            status=status.value,
            flow_run_id=first.flow_run_id,
            history_ids=[r.id for r in rows],
            duration_ms=int((utcnow() - min(r.started_at for r in rows)).total_seconds() * 1000),
            error=_error(db, first.id),
            output="\n".join(r.output for r in rows if r.output),
        )
        await anyio.to_thread.run_sync(notify_after_run, db, settings, run)
    except Exception as exc:
        log.warning("cannot notify about a reconciled run: %s", exc.__class__.__name__)


def _error(db: Database, row_id: int) -> str | None:
    with db.read() as session:
        row = session.get(TaskHistory, row_id)
        return None if row is None else row.error


def _finish(db: Database, row_id: int, status: RunStatus, error: str) -> bool:
    """Finish one running row; False if another process finished it first."""
    with db.write() as session:
        row = session.get(TaskHistory, row_id)
        if row is None or row.status != RunStatus.RUNNING.value:
            return False
        now = utcnow()
        row.status = status.value
        row.success = False
        row.error = error
        row.finished_at = now
        row.duration_ms = int((now - row.started_at).total_seconds() * 1000)
        return True


def purge_history(db: Database, retention_days: int, batch: int = 50_000) -> int:
    """Delete finished history rows older than ``retention_days``, in batches; return how many.

    Rows still ``running`` are kept whatever their age. The task rows' counters are
    not changed: they count every run ever recorded.
    """
    cutoff = utcnow() - timedelta(days=retention_days)
    return purge_before(
        db,
        TaskHistory.started_at,
        cutoff,
        TaskHistory.status != RunStatus.RUNNING.value,
        batch=batch,
    )
