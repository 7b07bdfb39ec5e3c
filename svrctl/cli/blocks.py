"""``svrctl blocks``: servers and notification channels as Prefect blocks (docs/blocks.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import click

from svrctl.cli.app import App, SvrctlGroup, pass_app
from svrctl.cli.render import echo_json

if TYPE_CHECKING:
    from svrctl.blocks_sync import BlocksReport

__all__ = ["blocks", "forget_block", "print_blocks_report"]


@click.group(cls=SvrctlGroup)
def blocks() -> None:
    """Edit servers and channels on Prefect's Blocks page; the database stays the truth."""


@blocks.command("register")
@pass_app
def register_cmd(app: App) -> None:
    """Register the block types svrctl-server and svrctl-notify-channel with Prefect."""
    from svrctl.blocks_sync import register_block_types
    from svrctl.sync import require_api

    url = require_api(app.settings)
    for slug in register_block_types(url):
        click.echo(f"✓ registered block type {slug}")


@blocks.command("apply")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_app
def apply_cmd(app: App, dry_run: bool, as_json: bool) -> None:
    """Write block edits that are newer than the database to the database.

    Each block is checked as `svrctl server add/edit` and `svrctl notify add/edit`
    check their options; a block that fails is reported and changes nothing. When a
    server changed, the deployments follow (as after `svrctl server edit`). Exits 1
    when a block was refused.
    """
    from svrctl.blocks_sync import apply_blocks
    from svrctl.sync import require_api

    url = require_api(app.settings)
    report = apply_blocks(app.db(), url, dry_run=dry_run)
    if report.changed("server"):
        _sync_deployments(app)
    _finish(report, as_json)


@blocks.command("export")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_app
def export_cmd(app: App, as_json: bool) -> None:
    """Write every server and channel of the database to its block.

    A block holding an edit newer than the database is left for `svrctl blocks apply`.
    """
    from svrctl.blocks_sync import export_blocks
    from svrctl.sync import require_api

    url = require_api(app.settings)
    _finish(export_blocks(app.db(), url), as_json)


def _finish(report: BlocksReport, as_json: bool) -> None:
    if as_json:
        echo_json(report.to_dict())
    else:
        print_blocks_report(report)
    if not report.ok:
        raise SystemExit(1)


def _sync_deployments(app: App) -> None:
    """Sync every task's deployment and every server's limit after servers changed."""
    from sqlalchemy import select

    from svrctl.cli.sync import auto_sync
    from svrctl.db.models import Server, Task
    from svrctl.sync import Scope

    with app.db().read() as session:
        tasks = list(session.execute(select(Task.id, Task.name, Task.deployment_id)))
        servers = frozenset(session.scalars(select(Server.name)))
    scope = Scope(
        task_ids=frozenset(t.id for t in tasks),
        names=frozenset(t.name for t in tasks),
        deployment_ids=frozenset(t.deployment_id for t in tasks if t.deployment_id),
        servers=servers,
    )
    auto_sync(app, scope, what="the servers applied from blocks", schedule_waits=False)


def print_blocks_report(report: BlocksReport) -> None:
    """Print what an apply or export did, for people."""
    for line in report.lines():
        click.echo(f"  {line}")
    verb = "dry run, nothing written: " if report.dry_run else ""
    click.echo(f"blocks: {verb}{report.summary()}")


def forget_block(app: App, kind: Literal["server", "channel"], name: str) -> None:
    """Delete the block of a server or channel just removed; warn when it cannot be done."""
    from svrctl.blocks_sync import forget_block as forget

    forget(app.settings, kind, name, lambda text: click.echo(text, err=True))
