"""The ``refresh-views`` flow and the publishing of views as Prefect artifacts.

Views (:mod:`svrctl.views`) are markdown artifacts with stable keys: ``fleet``,
``failures``, ``task-<name>-history`` and ``metrics-<server>``. The ``run-task``
flow publishes the views each run changes (:func:`publish_after_run`); the
``refresh-views`` flow, scheduled from ``prefect.yaml``, publishes all of them, so
views stay true after history retention, edits and runs outside Prefect. See
docs/views.md.
"""

from __future__ import annotations

import asyncio
from functools import partial

import anyio
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from svrctl.notify.deliver import run_url
from svrctl.runtime import app_database, app_settings
from svrctl.settings import Settings
from svrctl.views import View, all_views, views_after_run

__all__ = ["publish", "publish_after_run", "refresh_views"]


async def publish(views: list[View]) -> None:
    """Create one new version of each view's artifact, all at once."""
    await asyncio.gather(
        *(
            acreate_markdown_artifact(markdown=v.markdown, key=v.key, description=v.description)
            for v in views
        )
    )


async def publish_after_run(settings: Settings, task_id: int, flow_run_id: str | None) -> None:
    """Publish the views one run of a task changed: its history, fleet, failures, metrics."""
    db = app_database(settings)
    link = partial(run_url, settings)

    def build() -> list[View]:
        with db.read() as session:
            return views_after_run(session, task_id, flow_run_id, link)

    await publish(await anyio.to_thread.run_sync(build))


@flow(
    name="refresh-views",
    description="Rebuilds every svrctl view artifact: fleet, failures, each task's history "
    "and each server's metrics.",
    persist_result=False,
)
async def refresh_views() -> int:
    """Publish every view; return how many were published."""
    settings = app_settings()
    db = app_database(settings)
    link = partial(run_url, settings)

    def build() -> list[View]:
        with db.read() as session:
            return all_views(session, link)

    views = await anyio.to_thread.run_sync(build)
    await publish(views)
    get_run_logger().info("published %d view(s): %s", len(views), ", ".join(v.key for v in views))
    return len(views)
