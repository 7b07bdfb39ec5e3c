"""Housekeeping flows: reconcile runs left running by a dead process, purge old history.

Both flows have a static deployment in the ``svrctl`` work pool, declared in the
repository's ``prefect.yaml`` (``prefect deploy --all``) and created by ``svrctl up``
when missing (:func:`ensure_maintenance_deployments`). See docs/maintenance.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import anyio
from prefect import Flow, flow, get_client, get_run_logger
from prefect.exceptions import ObjectNotFound

from svrctl.execution.reconcile import purge_history, reconcile_running
from svrctl.runtime import app_database, app_settings

__all__ = [
    "MAINTENANCE_DEPLOYMENTS",
    "MAINTENANCE_TAG",
    "MaintenanceDeployment",
    "ensure_maintenance_deployments",
    "flow_run_state",
    "history_retention",
    "reconcile_runs",
]

# Not sync's managed tag ("svrctl"): `svrctl sync` never touches these deployments.
MAINTENANCE_TAG = "svrctl-maintenance"
SCHEDULE_SLUG = "svrctl"


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
    """Delete finished history and metrics older than SVRCTL_HISTORY_RETENTION_DAYS (or ``days``).

    Returns the number of history rows removed.
    """
    from svrctl.metrics import purge_metrics

    settings = app_settings()
    keep = days or settings.history_retention_days
    db = app_database(settings)
    removed = await anyio.to_thread.run_sync(purge_history, db, keep)
    figures = await anyio.to_thread.run_sync(purge_metrics, db, keep)
    get_run_logger().info(
        "removed %d history row(s) and %d metric(s) older than %d days", removed, figures, keep
    )
    return removed


@dataclass(frozen=True)
class MaintenanceDeployment:
    """One static deployment of a maintenance flow, as prefect.yaml declares it.

    Attributes:
        flow_name: The flow's name in Prefect.
        name: The deployment's name (its full name is ``flow_name/name``).
        entrypoint: Module path of the flow in the installed package.
        cron: 5-field cron expression of its schedule.
        timezone: IANA time zone of the schedule.
        description: What it does (shown in Prefect's UI).
        parameters: The flow's parameters for this deployment.
    """

    flow_name: str
    name: str
    entrypoint: str
    cron: str
    timezone: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        """Return ``flow/deployment``, as `prefect deployment run` takes it."""
        return f"{self.flow_name}/{self.name}"


# Keep equal to prefect.yaml (tests/test_prefect_yaml.py checks it).
MAINTENANCE_DEPLOYMENTS = (
    MaintenanceDeployment(
        flow_name="history-retention",
        name="svrctl",
        entrypoint="svrctl.flows.maintenance:history_retention",
        cron="30 3 * * *",
        timezone="UTC",
        description="Deletes finished run history older than SVRCTL_HISTORY_RETENTION_DAYS "
        "(default 30) from the app database, daily.",
    ),
    MaintenanceDeployment(
        flow_name="reconcile-runs",
        name="svrctl",
        entrypoint="svrctl.flows.maintenance:reconcile_runs",
        cron="*/5 * * * *",
        timezone="UTC",
        description="Marks history rows crashed (or cancelled) whose Prefect flow run is over "
        "or gone while the row still says running, every 5 minutes.",
    ),
    MaintenanceDeployment(
        flow_name="summary-report",
        name="daily",
        entrypoint="svrctl.flows.summary:summary_report",
        cron="0 7 * * *",
        timezone="UTC",
        description="Sends the summary of the last 24 hours (runs, failures and success rate "
        "per task, tasks failing now, slowest tasks, missed runs, next runs) to the "
        "notification channels marked for summaries, daily.",
        parameters={"period": "daily"},
    ),
    MaintenanceDeployment(
        flow_name="summary-report",
        name="weekly",
        entrypoint="svrctl.flows.summary:summary_report",
        cron="0 7 * * 1",
        timezone="UTC",
        description="Sends the summary of the last 7 days (runs, failures and success rate "
        "per task, tasks failing now, slowest tasks, missed runs, next runs) to the "
        "notification channels marked for summaries, on Mondays.",
        parameters={"period": "weekly"},
    ),
    MaintenanceDeployment(
        flow_name="refresh-views",
        name="svrctl",
        entrypoint="svrctl.flows.views:refresh_views",
        cron="*/15 * * * *",
        timezone="UTC",
        description="Rebuilds the view artifacts (fleet, failures, each task's history, each "
        "server's metrics) every 15 minutes; runs refresh the views they change themselves.",
    ),
)


async def ensure_maintenance_deployments(pool: str = "svrctl") -> list[str]:
    """Create each maintenance deployment that is missing; return the full names created.

    A deployment that exists is left exactly as it is (its schedule, pool, parameters
    and paused state may have been changed on purpose), so this is idempotent and never
    undoes a change made in Prefect's UI or by ``prefect deploy``.
    """
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    from svrctl.flows.summary import summary_report
    from svrctl.flows.views import refresh_views

    flows: dict[str, Flow[Any, Any]] = {
        "history-retention": history_retention,
        "reconcile-runs": reconcile_runs,
        "summary-report": summary_report,
        "refresh-views": refresh_views,
    }
    created: list[str] = []
    async with get_client() as client:
        for spec in MAINTENANCE_DEPLOYMENTS:
            try:
                await client.read_deployment_by_name(spec.full_name)
                continue
            except ObjectNotFound:
                pass
            flow_id = await client.create_flow_from_name(spec.flow_name)
            await client.create_deployment(
                flow_id=flow_id,
                name=spec.name,
                entrypoint=spec.entrypoint,
                description=spec.description,
                tags=[MAINTENANCE_TAG],
                parameters=dict(spec.parameters),
                parameter_openapi_schema=flows[spec.flow_name].parameters.model_dump(
                    exclude_unset=True
                ),
                enforce_parameter_schema=True,
                work_pool_name=pool,
                work_queue_name="default",
                pull_steps=[],
                schedules=[
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron=spec.cron, timezone=spec.timezone),
                        active=True,
                        slug=SCHEDULE_SLUG,
                    )
                ],
            )
            created.append(spec.full_name)
    return created
