"""``svrctl metrics``: what plugins measured on a server, over time."""

from __future__ import annotations

import click

from svrctl.cli.app import App, pass_app
from svrctl.cli.render import echo_json, format_time, table

__all__ = ["metrics"]


@click.command("metrics")
@click.argument("server")
@click.option("--name", help="Only this metric (e.g. memory_percent).")
@click.option("--since", default="1d", show_default=True, help="30m, 12h, 1d, 2w or an ISO time.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def metrics(app: App, server: str, name: str | None, since: str, limit: int, as_json: bool) -> None:
    """Print the metrics plugins recorded for SERVER (a server name or a local host name)."""
    from svrctl.metrics import metric_to_dict, parse_since, read_metrics

    start = parse_since(since)
    with app.db().read() as session:
        rows = read_metrics(session, server, name=name, since=start, limit=limit)
    if as_json:
        echo_json([metric_to_dict(r) for r in rows])
        return
    if not rows:
        what = f"metric {name!r}" if name else "metrics"
        click.echo(
            f"no {what} for {server} since {format_time(start, app.settings.timezone)}: "
            "plugin tasks (e.g. --plugin health) record them when they run",
            err=True,
        )
        return
    zone = app.settings.timezone
    table(
        ["TIME", "NAME", "VALUE", "UNIT", "LABELS", "PLUGIN"],
        [
            [
                format_time(r.time, zone),
                r.name,
                f"{r.value:g}",
                r.unit,
                ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())),
                r.plugin,
            ]
            for r in rows
        ],
    )
