"""``svrctl sync``: make Prefect match the app database; the automatic sync after a change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from svrctl.cli.app import App, pass_app
from svrctl.cli.render import echo_json

if TYPE_CHECKING:
    from svrctl.sync import Scope, SyncReport

__all__ = ["auto_sync", "sync"]


@click.command("sync")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and its outcome as JSON.")
@pass_app
def sync(app: App, dry_run: bool, as_json: bool) -> None:
    """Make Prefect match the app database: one deployment per task, per-server limits.

    Creates, updates and deletes only what differs, and prints the plan. Only
    deployments tagged 'svrctl' are ever updated or deleted. Exits 2 when no Prefect
    API answers, 1 when a task could not be synced or a change failed.
    """
    from svrctl.sync import require_api
    from svrctl.sync import sync as run_sync

    db = app.db()
    url = require_api(app.settings)
    report = run_sync(db, url, dry_run=dry_run)
    skip_final_gc()
    if as_json:
        echo_json(report.to_dict())
    else:
        print_report(report)
    if not report.ok:
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

    The change is already saved in the app database; a failed sync never undoes it or
    changes the exit code. Messages go to stderr, so ``--json`` output stays clean.

    Args:
        app: The CLI state.
        scope: The tasks and servers the command changed.
        what: What changed, for messages ("task backup").
        schedule_waits: True when an enabled schedule waits for the sync, so the
            missing Prefect API is worth a note even when none is configured at all.

    Returns:
        The sync report, or None when nothing was synced.
    """
    from svrctl.sync import find_api
    from svrctl.sync import sync as run_sync

    target = find_api(app.settings)
    if target.url is None:
        if target.configured:
            _warn(
                f"warning: Prefect was not updated: {target.problem}. The change to {what} is "
                "saved in svrctl's database; run `svrctl sync` once Prefect is reachable."
            )
        elif schedule_waits:
            _warn(
                f"note: {what} is saved, but {target.problem}, so its schedule does not run "
                "yet; run `svrctl sync` once Prefect runs."
            )
        return None
    skip_final_gc()
    try:
        report = run_sync(app.db(), target.url, scope=scope)
    except Exception as exc:  # Prefect went away mid-sync, or answered with an error
        _warn(
            f"warning: Prefect was not updated ({type(exc).__name__}: {exc}). The change to "
            f"{what} is saved in svrctl's database; run `svrctl sync` to retry."
        )
        return None
    for problem in report.problems:
        _warn(f"warning: {problem}")
    for action in report.failed:
        _warn(f"warning: Prefect was not fully updated: {action.line()}")
    if not report.ok:
        _warn("  the change is saved in svrctl's database; run `svrctl sync` to retry.")
    return report


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
