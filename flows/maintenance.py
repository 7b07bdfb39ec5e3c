"""Housekeeping flows: reconcile runs left running by a dead process, purge old history.

Both flows have a static deployment in the ``svrctl`` work pool, declared in the
repository's ``prefect.yaml`` (``prefect deploy --all``) and created by ``svrctl up``
when missing (:func:`ensure_maintenance_deployments`). See docs/maintenance.md.
The admin flows (:mod:`svrctl.flows.admin`, docs/admin.md) are listed here too
(:data:`ADMIN_DEPLOYMENTS`): unscheduled deployments tagged ``svrctl-admin``.
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
    "ADMIN_DEPLOYMENTS",
    "ADMIN_TAG",
    "MAINTENANCE_DEPLOYMENTS",
    "MAINTENANCE_TAG",
    "STATIC_DEPLOYMENTS",
    "MaintenanceDeployment",
    "ensure_maintenance_deployments",
    "flow_run_state",
    "history_retention",
    "reconcile_runs",
]

# Not sync's managed tag ("svrctl"): `svrctl sync` never touches these deployments.
MAINTENANCE_TAG = "svrctl-maintenance"
ADMIN_TAG = "svrctl-admin"
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
        cron: 5-field cron expression of its schedule; None: no schedule (an admin
            flow, run from its Custom run form).
        timezone: IANA time zone of the schedule.
        description: What it does (shown in Prefect's UI).
        parameters: The flow's parameters for this deployment.
        tag: Its one tag: ``svrctl-maintenance``, or ``svrctl-admin`` for admin flows.
    """

    flow_name: str
    name: str
    entrypoint: str
    cron: str | None
    timezone: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tag: str = MAINTENANCE_TAG

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

# The admin flows (svrctl.flows.admin): no schedule; their Custom run form is the editing form.
ADMIN_DEPLOYMENTS = (
    MaintenanceDeployment(
        flow_name="server-add",
        name="svrctl",
        entrypoint="svrctl.flows.admin:server_add",
        cron=None,
        timezone="UTC",
        description=(
            "Adds a server to svrctl's inventory (svrctl server add); its key passphrase, "
            "password and sudo password are saved as Secret blocks."
        ),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="server-edit",
        name="svrctl",
        entrypoint="svrctl.flows.admin:server_edit",
        cron=None,
        timezone="UTC",
        description=(
            "Changes a server (svrctl server edit): empty fields stay as they are; new "
            "secrets are saved as Secret blocks."
        ),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="server-remove",
        name="svrctl",
        entrypoint="svrctl.flows.admin:server_remove",
        cron=None,
        timezone="UTC",
        description=("Removes a server that no task targets (svrctl server rm)."),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="server-test",
        name="svrctl",
        entrypoint="svrctl.flows.admin:server_test",
        cron=None,
        timezone="UTC",
        description=(
            "Connects to a server, runs a harmless command and remembers its OS (svrctl "
            "server test)."
        ),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="server-trust",
        name="svrctl",
        entrypoint="svrctl.flows.admin:server_trust",
        cron=None,
        timezone="UTC",
        description=(
            "Shows a server's host key fingerprint; with confirm on, pins it (svrctl server trust)."
        ),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="task-add",
        name="svrctl",
        entrypoint="svrctl.flows.admin:task_add",
        cron=None,
        timezone="UTC",
        description=("Adds a task and creates its deployment (svrctl task add)."),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="task-edit",
        name="svrctl",
        entrypoint="svrctl.flows.admin:task_edit",
        cron=None,
        timezone="UTC",
        description=(
            "Changes a task and syncs its deployment (svrctl task edit): empty fields stay as "
            "they are."
        ),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="task-remove",
        name="svrctl",
        entrypoint="svrctl.flows.admin:task_remove",
        cron=None,
        timezone="UTC",
        description=("Removes a task, its history and its deployment (svrctl task rm)."),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="task-enable",
        name="svrctl",
        entrypoint="svrctl.flows.admin:task_enable",
        cron=None,
        timezone="UTC",
        description=("Enables a task: its schedule fires again (svrctl task enable)."),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="task-disable",
        name="svrctl",
        entrypoint="svrctl.flows.admin:task_disable",
        cron=None,
        timezone="UTC",
        description=("Disables a task: its schedule stops firing (svrctl task disable)."),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="plugin-configure",
        name="svrctl",
        entrypoint="svrctl.flows.admin:plugin_configure",
        cron=None,
        timezone="UTC",
        description=(
            "Configures a plugin on a server with a schedule and its settings: creates or "
            "updates the task and its deployment in one step."
        ),
        tag=ADMIN_TAG,
    ),
    MaintenanceDeployment(
        flow_name="notify-test",
        name="svrctl",
        entrypoint="svrctl.flows.admin:notify_test",
        cron=None,
        timezone="UTC",
        description=("Sends a test message to a notification channel (svrctl notify test)."),
        tag=ADMIN_TAG,
    ),
)

# Every static deployment, in prefect.yaml's order.
STATIC_DEPLOYMENTS = MAINTENANCE_DEPLOYMENTS + ADMIN_DEPLOYMENTS


def _flow_of(spec: MaintenanceDeployment) -> Flow[Any, Any]:
    """Import the flow a static deployment runs, from its entrypoint."""
    import importlib

    module, _, attribute = spec.entrypoint.partition(":")
    found: Flow[Any, Any] = getattr(importlib.import_module(module), attribute)
    return found


async def ensure_maintenance_deployments(pool: str = "svrctl") -> list[str]:
    """Create each static deployment (maintenance and admin) that is missing; return their names.

    A deployment that exists is left exactly as it is (its schedule, pool, parameters
    and paused state may have been changed on purpose), so this is idempotent and never
    undoes a change made in Prefect's UI or by ``prefect deploy``.
    """
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    created: list[str] = []
    async with get_client() as client:
        for spec in STATIC_DEPLOYMENTS:
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
                tags=[spec.tag],
                parameters=dict(spec.parameters),
                parameter_openapi_schema=_flow_of(spec).parameters.model_dump(exclude_unset=True),
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
                ]
                if spec.cron
                else [],
            )
            created.append(spec.full_name)
    return created
