"""Housekeeping flows: reconcile runs left running by a dead process, purge old history."""

from __future__ import annotations

from uuid import UUID

import anyio
from prefect import flow, get_client, get_run_logger
from prefect.exceptions import ObjectNotFound

from svrctl.execution.reconcile import purge_history, reconcile_running
from svrctl.runtime import app_database, app_settings

__all__ = ["flow_run_state", "history_retention", "reconcile_runs"]


async def flow_run_state(flow_run_id: UUID) -> str | None:
    """Return a flow run's state type, or None when Prefect no longer has it."""
    async with get_client() as client:
        try:
            run = await client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return None
    return run.state.type.value if run.state is not None else None


@flow(name="reconcile-runs", persist_result=False)
async def reconcile_runs() -> int:
    """Mark history rows crashed whose flow run is over or gone; return how many."""
    changed = await reconcile_running(app_database(), flow_run_state)
    get_run_logger().info("reconciled %d history row(s) left running", len(changed))
    return len(changed)


@flow(name="history-retention", persist_result=False)
async def history_retention(days: int | None = None) -> int:
    """Delete finished history older than SVRCTL_HISTORY_RETENTION_DAYS (or ``days``)."""
    settings = app_settings()
    keep = days or settings.history_retention_days
    removed = await anyio.to_thread.run_sync(purge_history, app_database(settings), keep)
    get_run_logger().info("removed %d history row(s) older than %d days", removed, keep)
    return removed
