"""``svrctl server``: the server inventory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from svrctl.cli.app import App, SvrctlGroup, pass_app
from svrctl.cli.render import echo_json, format_time, table

__all__ = ["server"]

F = Callable[..., Any]


@click.group(cls=SvrctlGroup)
def server() -> None:
    """Add, list, edit and remove servers."""


def _server_options(*, edit: bool) -> Callable[[F], F]:
    """Options shared by ``server add`` and ``server edit``."""

    def decorate(func: F) -> F:
        opts = [
            click.option("--host", required=not edit, help="Host name or IP address."),
            click.option("--port", type=int, help="SSH port (default 22)."),
            click.option("--user", "username", help="Login user (default: your user name)."),
            click.option("--key", "key_path", help="Private key file (default: auto-detect)."),
            click.option(
                "--host-key-policy",
                type=click.Choice(["strict", "accept-new"]),
                help="strict (default): only pinned host keys; accept-new: pin on first contact.",
            ),
            click.option("--pool", "work_pool", help="Prefect work pool for this server's tasks."),
            click.option(
                "--tag",
                "tags",
                multiple=True,
                help="A tag (repeatable)." + (" Replaces all tags." if edit else ""),
            ),
            click.option("--description", help="Free text."),
            click.option(
                "--enabled/--disabled", "enabled", default=None, help="Enable or disable."
            ),
            click.option("--jump", help="Connect through this server (like ProxyJump)."),
            click.option(
                "--connect-timeout",
                "connect_timeout_seconds",
                type=int,
                help="Seconds for each of connect, banner and auth (default 10).",
            ),
            click.option(
                "--key-passphrase-secret", help="Prefect Secret block holding the key passphrase."
            ),
            click.option(
                "--password-secret", help="Prefect Secret block holding a login password."
            ),
            click.option(
                "--sudo-password-secret", help="Prefect Secret block answering sudo prompts."
            ),
            click.option(
                "--max-concurrent",
                "max_concurrent",
                metavar="N",
                help="At most N runs touch this server at once, across all tasks "
                "(default: no limit" + ("; '' or 0 removes the limit)." if edit else ")."),
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the server as JSON."),
        ]
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def _changes(**options: Any) -> dict[str, Any]:
    """Keep the options that were given."""
    from svrctl.admin import server_changes

    return server_changes(**options)


@server.command("add")
@click.argument("name")
@_server_options(edit=False)
@pass_app
def add_cmd(app: App, /, name: str, as_json: bool, **options: Any) -> None:
    """Add a server."""
    from svrctl.admin import add_server_entry
    from svrctl.cli.sync import feedback

    fields = {"name": name, **_changes(**options)}
    data = add_server_entry(app.db(), app.settings, fields, feedback())
    _print_saved("added", data, as_json)


@server.command("edit")
@click.argument("name")
@_server_options(edit=True)
@pass_app
def edit_cmd(app: App, /, name: str, as_json: bool, **options: Any) -> None:
    """Change a server's settings; options not given stay as they are."""
    from svrctl.admin import edit_server_entry
    from svrctl.cli.sync import feedback

    data = edit_server_entry(app.db(), app.settings, name, _changes(**options), feedback())
    _print_saved("updated", data, as_json)


def _print_saved(verb: str, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(data)
        return
    click.echo(
        f"✓ {verb} server {data['name']} ({data['username']}@{data['host']}:{data['port']}, "
        f"host keys {data['host_key_policy']})"
    )


@server.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_cmd(app: App, as_json: bool) -> None:
    """List servers."""
    from svrctl.servers import list_servers, server_to_dict

    with app.db().read() as session:
        servers = list_servers(session)
        data = [server_to_dict(session, s) for s in servers]
    if as_json:
        echo_json(data)
        return
    zone = app.settings.timezone
    table(
        ["NAME", "ADDRESS", "POOL", "TAGS", "ENABLED", "OS", "LAST SEEN"],
        [
            [
                s.name,
                f"{s.username}@{s.host}:{s.port}",
                s.work_pool,
                ",".join(s.tags or []) or None,
                s.enabled,
                " ".join(p for p in (s.os_type, s.os_version) if p) or None,
                format_time(s.last_seen, zone) if s.last_seen else None,
            ]
            for s in servers
        ],
    )


@server.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show_cmd(app: App, name: str, as_json: bool) -> None:
    """Show one server."""
    from svrctl.servers import get_server, server_to_dict

    with app.db().read() as session:
        data = server_to_dict(session, get_server(session, name))
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key + ':':<17} {'-' if shown in (None, '') else shown}")


@server.command("rm")
@click.argument("name")
@pass_app
def rm_cmd(app: App, name: str) -> None:
    """Remove a server that no task targets."""
    from svrctl.admin import remove_server_entry
    from svrctl.cli.sync import feedback

    remove_server_entry(app.db(), app.settings, name, feedback())
    click.echo(f"✓ removed server {name}")


@server.command("test")
@click.argument("name")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Command timeout.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def test_cmd(app: App, name: str, timeout: float, as_json: bool) -> None:
    """Connect, run a harmless command, report latency and the OS, and remember them."""
    import dataclasses

    from svrctl.admin import test_server
    from svrctl.exceptions import SshError

    try:
        report = test_server(app.db(), app.settings, name, timeout)
    except SshError as exc:
        if as_json:
            kind = type(exc).__name__
            echo_json({"server": name, "ok": False, "error": exc.message, "error_type": kind})
        else:
            click.echo(f"✗ {name}: {exc.message}", err=True)
        raise SystemExit(1) from None
    if as_json:
        echo_json({"ok": True, **dataclasses.asdict(report)})
        return
    os_text = " ".join(p for p in (report.os_type, report.os_version) if p) or "unknown OS"
    click.echo(
        f"✓ {name}: connected to {report.where} in {report.connect_ms} ms, "
        f"command in {report.command_ms} ms"
    )
    click.echo(f"  os: {os_text} ({report.kernel or 'no uname'})")
    click.echo(f"  auth: {report.auth}; host key: {report.host_key}")


@server.command("trust")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Pin without asking (for scripts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def trust_cmd(app: App, name: str, yes: bool, as_json: bool) -> None:
    """Fetch a server's host key, show its fingerprint, and pin it."""
    from svrctl.admin import host_key_offer, pin_offer

    offer = host_key_offer(app.db(), app.settings, name)
    print_ = (lambda *_a, **_k: None) if as_json else click.echo
    print_(f"{name} ({offer.where}) presents {offer.key_type} {offer.fingerprint}")
    if offer.trusted:
        print_("✓ already trusted: this key is pinned")
        state = "already-trusted"
    else:
        if offer.replaces:
            print_(f"! this REPLACES the pinned key {offer.replaces}")
        if not yes and not click.confirm("Trust and pin this key?", err=True):
            raise SystemExit(1)
        state, path = pin_offer(offer)
        print_(f"✓ pinned in {path}")
    if as_json:
        echo_json(
            {
                "server": name,
                "key_type": offer.key_type,
                "fingerprint": offer.fingerprint,
                "state": state,
            }
        )
