"""`svrctl up`: everything svrctl needs on one machine, in the foreground, until Ctrl-C.

In order: the PostgreSQL databases checked (and created when missing) when
``--postgres`` or the database variables name PostgreSQL, a Prefect server
(on SQLite under ``SVRCTL_HOME``, or on PostgreSQL; unless ``PREFECT_API_URL``
names one), the app database migrated, the work pool, the
automation that crashes zombie runs, the maintenance deployments (history
retention and reconciliation, created when missing), the demo task on first start, a sync of
every task to its deployment, reconciliation of rows left running, and then the
svrctl worker. Ctrl-C stops what it started.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from svrctl.postgres_setup import (
    APP_DB_VARIABLE,
    PREFECT_DB_VARIABLE,
    ensure_postgres_database,
    is_postgres,
    parse_postgres_url,
    shown_url,
)
from svrctl.settings import Settings

__all__ = [
    "DEFAULT_POOL",
    "DEMO_TASK",
    "UpOptions",
    "run_up",
    "seed_demo",
]

DEFAULT_POOL = "svrctl"
DEMO_TASK = "demo-health"
DEMO_COMMAND = "uptime; free -m; df -hP /"
DEMO_SCHEDULE = "0 * * * * *"  # every minute, at second 0
DEFAULT_PORT = 4200

Echo = Callable[[str], None]


@dataclass
class UpOptions:
    """What `svrctl up` was asked to do."""

    demo: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    limit: int = 10
    postgres: str | None = None


def _prepare_postgres(settings: Settings, options: UpOptions, echo: Echo) -> Settings:
    """Check (and create) the PostgreSQL databases before anything starts.

    With ``--postgres`` the app and Prefect database URLs are derived from it and
    put in this process's environment; without it, PostgreSQL URLs in
    SVRCTL_DATABASE_URL and PREFECT_SERVER_DATABASE_CONNECTION_URL are checked.
    Returns the settings to use (with the app database URL of ``--postgres``).
    """
    from svrctl.exceptions import BadInputError

    checks: list[tuple[str, str, str]] = []  # (url, variable, what)
    if options.postgres is not None:
        target = parse_postgres_url(options.postgres)
        given = [v for v in (APP_DB_VARIABLE, PREFECT_DB_VARIABLE) if os.environ.get(v)]
        if given:
            raise BadInputError(
                f"--postgres sets {APP_DB_VARIABLE} and {PREFECT_DB_VARIABLE}, but "
                f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} already set: "
                "give either --postgres or the variables",
                field="postgres",
            )
        if os.environ.get("PREFECT_API_URL"):
            raise BadInputError(
                "--postgres is for the Prefect server that svrctl up starts, but "
                "PREFECT_API_URL names another one: unset PREFECT_API_URL, or set "
                f"{APP_DB_VARIABLE} alone for the app database",
                field="postgres",
            )
        checks = [
            (target.app_url, "--postgres", "app database"),
            (target.prefect_url, "--postgres", "Prefect database"),
        ]
        settings = settings.model_copy(update={"database_url": target.app_url})
        os.environ[APP_DB_VARIABLE] = target.app_url
        os.environ[PREFECT_DB_VARIABLE] = target.prefect_url
        from svrctl import runtime

        runtime.reset()
    else:
        if is_postgres(settings.resolved_database_url):
            checks.append((settings.resolved_database_url, APP_DB_VARIABLE, "app database"))
        prefect_db = os.environ.get(PREFECT_DB_VARIABLE, "")
        if is_postgres(prefect_db) and not os.environ.get("PREFECT_API_URL"):
            checks.append((prefect_db, PREFECT_DB_VARIABLE, "Prefect database"))
    for url, variable, what in checks:
        created = ensure_postgres_database(url, variable)
        echo(f"✓ {what} on PostgreSQL: {shown_url(url)}" + (" (created)" if created else ""))
    return settings


def seed_demo(settings: Settings, echo: Echo) -> bool:
    """On first start (no tasks, no servers, not seeded before) add the demo task."""
    from sqlalchemy import func, select

    from svrctl.db.models import Server, Task, TaskKind
    from svrctl.runtime import app_database
    from svrctl.specs import TaskSpec
    from svrctl.tasks import add_task

    marker = settings.home / ".demo-seeded"
    if marker.exists():
        return False
    db = app_database(settings)
    with db.write() as session:
        has_any = session.scalar(select(func.count()).select_from(Task)) or session.scalar(
            select(func.count()).select_from(Server)
        )
        if not has_any:
            add_task(
                session,
                TaskSpec(
                    name=DEMO_TASK,
                    description="Demo: this machine's load, memory and disk, every minute.",
                    kind=TaskKind.LOCAL,
                    command=DEMO_COMMAND,
                    schedule=DEMO_SCHEDULE,
                    timezone=settings.timezone,
                ),
            )
    marker.write_text("seeded\n")
    if not has_any:
        echo(f"✓ added the demo task {DEMO_TASK}: `{DEMO_COMMAND}` every minute on this machine")
    return not has_any


def _start_server(settings: Settings, options: UpOptions, echo: Echo) -> object:
    from svrctl.prefect_api import remember_api
    from svrctl.prefect_server import port_is_free, start_prefect_server

    if not port_is_free(options.port, options.host):
        from svrctl.exceptions import BadInputError

        raise BadInputError(
            f"port {options.port} on {options.host} is in use: stop what uses it, or pick "
            "another with `svrctl up --port N`, or point PREFECT_API_URL at a running server",
            field="port",
        )
    home = settings.home / "prefect"
    if is_postgres(os.environ.get(PREFECT_DB_VARIABLE, "")):
        eta = "on PostgreSQL, about 10 s, 30 s on first start"
    elif not (home / "prefect.db").exists():
        eta = "first start: creating its database, about 30 s"
    else:
        eta = "about 10 s"
    echo(f"… starting a Prefect server on {options.host}:{options.port} ({eta})")
    shown = [0]

    def progress(waited: float) -> None:
        if waited - shown[0] >= 10:
            shown[0] = int(waited)
            echo(f"  … still starting ({int(waited)} s)")

    server = start_prefect_server(home, host=options.host, port=options.port, progress=progress)
    os.environ["PREFECT_API_URL"] = server.api_url
    remember_api(settings, server.api_url)
    echo(f"✓ Prefect server ready: {server.ui_url} (log: {server.log})")
    return server


async def run_up(settings: Settings, options: UpOptions, echo: Echo) -> None:
    """Start everything and run the worker until cancelled; stop what was started."""
    from svrctl.db.migrate import upgrade

    server = None
    settings = await asyncio.to_thread(_prepare_postgres, settings, options, echo)
    api = os.environ.get("PREFECT_API_URL")
    try:
        if not api:
            server = await asyncio.to_thread(_start_server, settings, options, echo)
        else:
            from svrctl.prefect_api import healthy

            if not await asyncio.to_thread(healthy, api):
                from svrctl.exceptions import BadInputError

                raise BadInputError(
                    f"PREFECT_API_URL is {api}, but no Prefect API answers there: start that "
                    "server, or unset PREFECT_API_URL to let `svrctl up` run one",
                    field="PREFECT_API_URL",
                )
            echo(f"✓ using the Prefect server at {api}")
        # Heartbeats let the zombie automation crash runs whose process died.
        os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
        from svrctl.prefect_api import reload_prefect_settings

        reload_prefect_settings()

        before, after = await asyncio.to_thread(
            upgrade, settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        echo(f"✓ app database at schema {after}" + ("" if before == after else " (migrated)"))
        if options.demo:
            await asyncio.to_thread(seed_demo, settings, echo)
        await _prepare_prefect(settings, echo)
        await _serve(settings, options, echo)
    finally:
        if server is not None:
            echo("… stopping the Prefect server")
            await asyncio.to_thread(server.stop)  # type: ignore[attr-defined]
            echo("✓ stopped")


async def _prepare_prefect(settings: Settings, echo: Echo) -> None:
    """Work pool, zombie automation, maintenance deployments, sync and reconciliation."""
    from svrctl.automations import ensure_zombie_automation
    from svrctl.execution.reconcile import reconcile_running
    from svrctl.flows.maintenance import (
        ADMIN_DEPLOYMENTS,
        MAINTENANCE_DEPLOYMENTS,
        ensure_maintenance_deployments,
        flow_run_state,
    )
    from svrctl.runtime import app_database
    from svrctl.sync import sync_all
    from svrctl.worker import ensure_work_pool

    await ensure_work_pool(DEFAULT_POOL)
    echo(f"✓ work pool {DEFAULT_POOL}")
    if await ensure_zombie_automation():
        echo("✓ added the automation that marks runs without heartbeats Crashed")
    # Created when missing, never updated: a schedule changed in Prefect stays changed.
    created = await ensure_maintenance_deployments(DEFAULT_POOL)
    for kind, specs, doc in (
        ("maintenance", MAINTENANCE_DEPLOYMENTS, "docs/maintenance.md"),
        ("admin", ADMIN_DEPLOYMENTS, "docs/admin.md"),
    ):
        added = [d.full_name for d in specs if d.full_name in created]
        if added:
            echo(f"✓ added the {kind} deployments {', '.join(added)} ({doc})")
        else:
            echo(f"✓ {kind} deployments {', '.join(d.full_name for d in specs)}")
    from svrctl.blocks_sync import up_blocks  # block types, then block edits (docs/blocks.md)

    await asyncio.to_thread(up_blocks, app_database(settings), os.environ["PREFECT_API_URL"], echo)
    plan = await sync_all(app_database(settings))
    echo(f"✓ synced tasks to deployments: {plan.summary()}")
    fixed = await reconcile_running(app_database(settings), flow_run_state)
    if fixed:
        echo(f"✓ marked {len(fixed)} history row(s) left running by a dead process as crashed")


async def _serve(settings: Settings, options: UpOptions, echo: Echo) -> None:
    """Print where to look, then run the worker in the foreground."""
    from svrctl.worker import run_worker

    _print_next_runs(settings, echo)
    api = os.environ.get("PREFECT_API_URL", "")
    ui = api.removesuffix("/api") if api.endswith("/api") else api
    echo(f"\nsvrctl is up. Prefect UI: {ui}   (Ctrl-C stops everything svrctl up started)")
    await run_worker(DEFAULT_POOL, limit=options.limit)


def _print_next_runs(settings: Settings, echo: Echo, count: int = 5) -> None:
    from sqlalchemy import select

    from svrctl.cli.render import format_time
    from svrctl.db.models import Task
    from svrctl.runtime import app_database

    with app_database(settings).read() as session:
        rows = list(
            session.scalars(
                select(Task)
                .where(Task.enabled.is_(True), Task.next_run_at.is_not(None))
                .order_by(Task.next_run_at)
                .limit(count)
            )
        )
    if not rows:
        echo("no scheduled runs (add a task with --schedule)")
        return
    echo("next scheduled runs:")
    for task in rows:
        echo(f"  {format_time(task.next_run_at, task.timezone)}  {task.name}")


def prefect_home(settings: Settings) -> Path:
    """Return where `svrctl up` keeps its Prefect server's files."""
    return settings.home / "prefect"
