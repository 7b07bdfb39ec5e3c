"""Prefect automations svrctl relies on, created idempotently by name."""

from __future__ import annotations

from datetime import timedelta

__all__ = ["HEARTBEAT_SECONDS", "ZOMBIE_AUTOMATION", "ensure_zombie_automation"]

ZOMBIE_AUTOMATION = "svrctl: crash zombie flow runs"
# Flow runs send a heartbeat this often (PREFECT_FLOWS_HEARTBEAT_FREQUENCY); three
# missed heartbeats mark the run Crashed, which frees its concurrency slot.
HEARTBEAT_SECONDS = 30
ZOMBIE_WITHIN = timedelta(seconds=3 * HEARTBEAT_SECONDS)


async def ensure_zombie_automation() -> bool:
    """Create the automation that marks runs without heartbeats Crashed; True if created."""
    from prefect import get_client
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    async with get_client() as client:
        if await client.read_automations_by_name(ZOMBIE_AUTOMATION):
            return False
    automation = Automation(
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when its heartbeats stop (the process "
        "running it died), so its history row is reconciled and its slot freed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=ZOMBIE_WITHIN,
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                state=StateType.CRASHED,
                message="Flow run marked as crashed due to missing heartbeats.",
                force=False,
            )
        ],
    )
    await automation.acreate()
    return True
