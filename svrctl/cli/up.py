"""``svrctl up``: run svrctl on this machine in the foreground (the main job)."""

from __future__ import annotations

import click

from svrctl.cli.app import App, pass_app

__all__ = ["up"]


@click.command("up")
@click.option("--no-demo", is_flag=True, help="Do not add the demo task on first start.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Prefect server address.")
@click.option("--port", type=click.IntRange(1, 65535), default=4200, show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Flow runs the worker runs at once.",
)
@click.option(
    "--postgres",
    metavar="URL",
    default=None,
    help="Run on PostgreSQL: postgresql://USER:PASSWORD@HOST[:PORT]/DB holds the app "
    "database DB and Prefect's database DB_prefect (created when missing).",
)
@pass_app
def up(app: App, no_demo: bool, host: str, port: int, limit: int, postgres: str | None) -> None:
    """Start a Prefect server (unless PREFECT_API_URL is set), sync, and run the worker.

    With --postgres URL (or SVRCTL_DATABASE_URL and PREFECT_SERVER_DATABASE_CONNECTION_URL)
    the app database and the Prefect server's database are on PostgreSQL; see
    docs/production.md.
    """
    from svrctl.cli.foreground import run_until_stopped
    from svrctl.up import UpOptions, run_up

    options = UpOptions(demo=not no_demo, host=host, port=port, limit=limit, postgres=postgres)
    app.settings.ensure_home()
    if run_until_stopped(lambda: run_up(app.settings, options, click.echo)):
        click.echo("\n✓ svrctl up stopped")
