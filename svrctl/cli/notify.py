"""``svrctl notify``: notification channels, test messages and the notification log."""

from __future__ import annotations

from typing import Any

import click

from svrctl.cli.app import App, SvrctlGroup, pass_app
from svrctl.cli.render import echo_json, first_line, format_time, table

__all__ = ["notify"]


@click.group(cls=SvrctlGroup)
def notify() -> None:
    """Add, list, test and remove notification channels (Gotify, ntfy, Apprise URLs)."""


def _target(data: dict[str, Any]) -> str:
    if data["kind"] == "ntfy":
        return f"{data['url']}/{data['topic']}"
    return str(data["url"] or "-")


def _describe(data: dict[str, Any]) -> str:
    flags = [f for f, on in (("default", data["default"]), ("summaries", data["summaries"])) if on]
    extra = f", {', '.join(flags)}" if flags else ""
    return f"{data['name']} ({data['kind']} → {_target(data)}{extra})"


@notify.command("add")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["gotify", "ntfy", "apprise"]),
    required=True,
    help="gotify, ntfy, or apprise (any Apprise URL: Slack, Discord, email, ...).",
)
@click.option(
    "--url",
    required=True,
    help="Server address (gotify, ntfy), or the whole Apprise URL (kept secret).",
)
@click.option("--topic", help="ntfy topic.")
@click.option("--token", help="Gotify app token, or ntfy access token (kept secret).")
@click.option(
    "--priority",
    type=int,
    help="Fixed priority for every message: ntfy 1-5, Gotify 0-10 (default: from the notice).",
)
@click.option("--markdown/--no-markdown", default=True, help="Send markdown (default: on).")
@click.option("--default", "default", is_flag=True, help="Join the default set.")
@click.option("--summaries", is_flag=True, help="Send the daily and weekly summaries here.")
@click.option("--json", "as_json", is_flag=True, help="Print the channel as JSON.")
@pass_app
def add_cmd(
    app: App,
    /,
    name: str,
    kind: str,
    url: str,
    topic: str | None,
    token: str | None,
    priority: int | None,
    markdown: bool,
    default: bool,
    summaries: bool,
    as_json: bool,
) -> None:
    """Add channel NAME; its token or Apprise URL goes into a Prefect Secret block.

    The first channel joins the default set (used by tasks that name no channel).
    """
    from svrctl.notify.channels import add_channel

    data = add_channel(
        app.db(),
        name=name,
        kind=kind,
        url=url,
        topic=topic,
        token=token,
        priority=priority,
        markdown=markdown,
        default=default,
        summaries=summaries,
    )
    if as_json:
        echo_json(data)
        return
    click.echo(f"✓ added channel {_describe(data)}; secret in block {data['secret_block'] or '-'}")


@notify.command("edit")
@click.argument("name")
@click.option("--url", help="New server address, or new Apprise URL (kept secret).")
@click.option("--topic", help="New ntfy topic.")
@click.option("--token", help="New token (kept secret).")
@click.option("--priority", help="Fixed priority (ntfy 1-5, Gotify 0-10); '' clears it.")
@click.option("--markdown/--no-markdown", default=None, help="Send markdown or plain text.")
@click.option(
    "--default/--no-default", "default", default=None, help="Join or leave the default set."
)
@click.option("--summaries/--no-summaries", default=None, help="Receive summaries or not.")
@click.option("--enabled/--disabled", "enabled", default=None, help="Enable or disable.")
@click.option("--json", "as_json", is_flag=True, help="Print the channel as JSON.")
@pass_app
def edit_cmd(
    app: App,
    /,
    name: str,
    priority: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Change channel NAME; options not given stay as they are."""
    from svrctl.exceptions import BadInputError
    from svrctl.notify.channels import update_channel

    level: int | None = None
    if priority is not None and priority.strip():
        try:
            level = int(priority)
        except ValueError:
            raise BadInputError(
                f"invalid priority (--priority): {priority!r} is not a whole number",
                field="priority",
            ) from None
    data = update_channel(
        app.db(),
        name,
        priority=level,
        clear_priority=priority is not None and not priority.strip(),
        **options,
    )
    if as_json:
        echo_json(data)
        return
    click.echo(f"✓ updated channel {_describe(data)}")


@notify.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_cmd(app: App, as_json: bool) -> None:
    """List channels (tokens are never shown; an Apprise URL shows its scheme only)."""
    from svrctl.notify.channels import channel_to_dict, list_channels

    with app.db().read() as session:
        data = [channel_to_dict(r) for r in list_channels(session)]
    if as_json:
        echo_json(data)
        return
    table(
        ["NAME", "KIND", "TARGET", "DEFAULT", "SUMMARIES", "ENABLED", "PRIORITY", "SECRET BLOCK"],
        [
            [
                d["name"],
                d["kind"],
                _target(d),
                d["default"],
                d["summaries"],
                d["enabled"],
                d["priority"],
                d["secret_block"],
            ]
            for d in data
        ],
    )


@notify.command("rm")
@click.argument("name")
@pass_app
def rm_cmd(app: App, name: str) -> None:
    """Remove channel NAME and its Secret block; refused while a task names it."""
    from svrctl.cli.blocks import forget_block
    from svrctl.notify.channels import remove_channel

    warning = remove_channel(app.db(), name)
    forget_block(app, "channel", name)  # its svrctl-notify-channel block, docs/blocks.md
    click.echo(f"✓ removed channel {name}")
    if warning:
        click.echo(f"! {warning}", err=True)


@notify.command("test")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def test_cmd(app: App, name: str, as_json: bool) -> None:
    """Send a test message to channel NAME; exit 1 when it is not delivered."""
    import dataclasses

    from svrctl.admin import test_channel

    result = test_channel(app.db(), app.settings, name)
    if as_json:
        echo_json(dataclasses.asdict(result))
    elif result.ok:
        click.echo(f"✓ {name}: delivered in {result.duration_ms} ms")
    else:
        click.echo(f"✗ {name}: not delivered: {result.error}", err=True)
    if not result.ok:
        raise SystemExit(1)


@notify.command("log")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--task", "task_name", help="Only this task's notifications.")
@click.option("--channel", help="Only this channel's notifications.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def log_cmd(
    app: App, limit: int, task_name: str | None, channel: str | None, as_json: bool
) -> None:
    """Show the notification log, newest first: every delivery attempt and its error."""
    from sqlalchemy import select

    from svrctl.db.models import NotificationLog

    query = select(NotificationLog).order_by(NotificationLog.time.desc(), NotificationLog.id.desc())
    if task_name:
        query = query.where(NotificationLog.task_name == task_name)
    if channel:
        query = query.where(NotificationLog.channel == channel)
    with app.db().read() as session:
        rows = list(session.scalars(query.limit(limit)))
    data: list[dict[str, Any]] = [
        {
            "time": r.time,
            "channel": r.channel,
            "task_id": r.task_id,
            "task": r.task_name,
            "event": r.event,
            "status": r.status,
            "ok": r.ok,
            "error": r.error,
            "flow_run_id": r.flow_run_id,
        }
        for r in rows
    ]
    if as_json:
        echo_json(data)
        return
    zone = app.settings.timezone
    table(
        ["TIME", "CHANNEL", "TASK", "EVENT", "STATUS", "OK", "ERROR"],
        [
            [
                format_time(d["time"], zone),
                d["channel"],
                d["task"],
                d["event"],
                d["status"],
                d["ok"],
                first_line(d["error"], 100) or None,
            ]
            for d in data
        ],
    )
