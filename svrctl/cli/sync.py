"""``svrctl sync``: make Prefect match the app database; the automatic sync after a change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from svrctl.cli.app import App, pass_app
from svrctl.cli.render import echo_json

if TYPE_CHECKING:
    from svrctl.admin import Feedback
    from svrctl.sync import Scope, SyncReport

__all__ = ["auto_sync", "feedback", "sync"]


@click.command("sync")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and its outcome as JSON.")
@pass_app
def sync(app: App, dry_run: bool, as_json: bool) -> None:
    """Make Prefect match the app database: one deployment per task, per-server limits.

    First applies server and channel blocks edited after the database, and writes the
    database back to the blocks (`svrctl blocks`, docs/blocks.md). Creates, updates
    and deletes only what differs, and prints the plan. Only
    deployments tagged 'svrctl' are ever updated or deleted. Exits 2 when no Prefect
    API answers, 1 when a task could not be synced or a change failed.
    """
    from svrctl.blocks_sync import sync_blocks
    from svrctl.cli.blocks import print_blocks_report
    from svrctl.sync import require_api
    from svrctl.sync import sync as run_sync

    db = app.db()
    url = require_api(app.settings)
    blocks = sync_blocks(db, url, dry_run=dry_run)  # block edits first (docs/blocks.md)
    report = run_sync(db, url, dry_run=dry_run)
    skip_final_gc()
    if as_json:
        echo_json(report.to_dict() | {"blocks": blocks.to_dict()})
    else:
        print_blocks_report(blocks)
        print_report(report)
    if not report.ok or not blocks.ok:
        raise SystemExit(1)


def print_report(report: SyncReport) -> None:
    """Print a sync's plan and outcome for people."""
    click.echo(f"Prefect API: {report.api_url}")
    for action in report.actions:
        click.echo(f"  {action.line()}")
    for problem in report.problems:
        click.echo(f"  ! {problem}")
    counts = report.counts()
    click.echo(
        f"plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {report.unchanged} unchanged"
    )
    if report.dry_run:
        click.echo("dry run: nothing was changed")
    elif not report.actions:
        click.echo(f"✓ nothing to change: Prefect matches the database ({report.seconds:.1f} s)")
    elif report.failed:
        click.echo(
            f"✗ {len(report.failed)} of {len(report.actions)} changes failed "
            f"({report.writes} writes in {report.seconds:.1f} s)"
        )
    else:
        click.echo(
            f"✓ applied {len(report.actions)} changes "
            f"({report.writes} writes in {report.seconds:.1f} s)"
        )


def auto_sync(app: App, scope: Scope, *, what: str, schedule_waits: bool) -> SyncReport | None:
    """Sync the deployments one command changed, if a Prefect API answers; else say so.

    See :func:`svrctl.admin.sync_change`; messages go to stderr, so ``--json`` output
    stays clean, and a failed sync never changes the exit code.
    """
    from svrctl.admin import sync_change

    return sync_change(
        app.db(), app.settings, scope, what=what, schedule_waits=schedule_waits, feedback=feedback()
    )


def feedback() -> Feedback:
    """Return the CLI's feedback: warnings on stderr, no final garbage collection after a sync."""
    from svrctl.admin import Feedback

    return Feedback(warn=_warn, before_sync=skip_final_gc)


def _warn(message: str) -> None:
    click.echo(message, err=True)


_final_gc_skipped = False


def skip_final_gc() -> None:
    """Spare the process the garbage collection Python runs while it exits.

    Once Prefect is imported and a sync has built its thousands of objects, that
    final collection takes about a second (measured with 1,000 deployments) of a
    command that is otherwise done. Freezing the heap at exit skips it; it changes
    nothing before the exit.
    """
    global _final_gc_skipped
    if not _final_gc_skipped:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _final_gc_skipped = True
