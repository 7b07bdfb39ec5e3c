"""``svrctl db``: create, migrate and inspect the app database."""

from __future__ import annotations

import click

from svrctl.cli.app import App, SvrctlGroup, pass_app
from svrctl.cli.render import echo_json

__all__ = ["db"]


@click.group(cls=SvrctlGroup)
def db() -> None:
    """Create, migrate and inspect the app database."""


@db.command("upgrade")
@pass_app
def upgrade_cmd(app: App) -> None:
    """Create the app database, or migrate it to this version's schema."""
    from svrctl.db.migrate import upgrade

    app.settings.ensure_home()
    url = app.settings.resolved_database_url
    before, after = upgrade(url, busy_timeout_ms=app.settings.sqlite_busy_timeout_ms)
    where = _display_url(url)
    if before is None:
        click.echo(f"✓ created the app database at {where} (schema {after})")
    elif before == after:
        click.echo(f"✓ the app database at {where} is up to date (schema {after})")
    else:
        click.echo(f"✓ migrated the app database at {where} from schema {before} to {after}")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status_cmd(app: App, as_json: bool) -> None:
    """Show where the app database is and which schema it has."""
    from svrctl.db.engine import make_engine
    from svrctl.db.schema import HEAD_REVISION, current_revision

    url = app.settings.resolved_database_url
    engine = make_engine(url, busy_timeout_ms=app.settings.sqlite_busy_timeout_ms)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    info = {
        "url": _display_url(url),
        "revision": revision,
        "code_revision": HEAD_REVISION,
        "up_to_date": revision == HEAD_REVISION,
    }
    if as_json:
        echo_json(info)
        return
    click.echo(f"database: {info['url']}")
    click.echo(f"schema:   {revision or 'none (run `svrctl db upgrade`)'} (code: {HEAD_REVISION})")


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
