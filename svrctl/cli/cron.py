"""``svrctl cron``: explain a cron expression and the Prefect schedule it becomes."""

from __future__ import annotations

from typing import Any

import click

from svrctl.cli.app import App, SvrctlGroup, pass_app
from svrctl.cli.render import echo_json, format_time

__all__ = ["cron"]


@click.group(cls=SvrctlGroup)
def cron() -> None:
    """Understand cron expressions before you schedule a task with one."""


@cron.command("explain")
@click.argument("expression")
@click.option("--tz", "--timezone", "tz", help="IANA time zone (default: SVRCTL_TIMEZONE).")
@click.option("-n", "count", type=click.IntRange(0, 1000), default=5, help="Fire times to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def explain_cmd(app: App, expression: str, tz: str | None, count: int, as_json: bool) -> None:
    """Print the next fire times of EXPRESSION and the Prefect schedule it becomes.

    Exits 2 when the expression is invalid, or when no Prefect schedule can run it
    exactly in that time zone (`svrctl task add` would refuse it too); the fire
    times are still printed then.
    """
    from svrctl.cron import CronError, describe, next_fire_times, parse_cron
    from svrctl.db.models import utcnow
    from svrctl.exceptions import BadInputError
    from svrctl.schedules import to_prefect_schedule
    from svrctl.specs import CRON_HINT, SCHEDULE_MAX_LENGTH, check_timezone, shown

    zone = tz or app.settings.timezone
    try:
        check_timezone(zone)
    except ValueError as exc:
        raise BadInputError(f"invalid timezone (--tz): {exc}", field="timezone") from None
    if not expression.strip():
        raise BadInputError(
            f"invalid schedule: the expression is empty{CRON_HINT}", field="schedule"
        )
    if len(expression) > SCHEDULE_MAX_LENGTH:
        raise BadInputError(
            f"invalid schedule: {shown(expression)} is longer than {SCHEDULE_MAX_LENGTH} "
            "characters, the longest schedule a task keeps; write it shorter, e.g. with "
            "ranges ('1-5') and steps ('*/15')",
            field="schedule",
        )
    try:
        schedule = parse_cron(expression)
    except CronError as exc:
        raise BadInputError(
            f"invalid schedule: {exc.message}{CRON_HINT}", field="schedule"
        ) from None
    now = utcnow()
    times = next_fire_times(schedule, now, count, zone)
    data: dict[str, Any] = {
        "expression": expression,
        "format": schedule.dialect,
        "means": describe(schedule),
        "timezone": zone,
        "next_fire_times": [t.isoformat() for t in times],
        "prefect_schedule": None,
        "error": None,
    }
    try:
        spec = to_prefect_schedule(expression, zone, now=now)
    except CronError as exc:
        data["error"] = exc.message
    else:
        data["prefect_schedule"] = {
            "type": spec.kind,
            "cron": spec.cron,
            "day_or": spec.day_or,
            "rrule": spec.rrule,
            "timezone": spec.timezone,
        }
    if as_json:
        echo_json(data)
    else:
        _print(data, times)
    if data["error"] is not None:
        if not as_json:
            click.echo(
                f"error: invalid schedule: {data['error']}",
                err=True,
            )
        raise SystemExit(2)


def _print(data: dict[str, Any], times: list[Any]) -> None:
    zone = data["timezone"]
    click.echo(f"expression:   {data['expression']} ({data['format']} format)")
    click.echo(f"means:        {data['means']}")
    click.echo(f"time zone:    {zone}")
    if times:
        click.echo(f"next {len(times)} fire times ({zone}):")
        for when in times:
            click.echo(f"  {format_time(when, zone)}")
    else:
        click.echo("next fire times: none (the schedule has no more fire times)")
    prefect = data["prefect_schedule"]
    if prefect is None:
        click.echo("Prefect schedule: none: Prefect cannot run this schedule exactly")
    elif prefect["type"] == "cron":
        rule = "on (either day field)" if prefect["day_or"] else "off (both day fields)"
        click.echo(
            f"Prefect schedule: cron '{prefect['cron']}' in {prefect['timezone']}, day_or {rule}"
        )
    else:
        click.echo(f"Prefect schedule: rrule in {prefect['timezone']}:")
        for line in str(prefect["rrule"]).splitlines():
            click.echo(f"  {line}")
