"""``svrctl task``: the task catalogue and its history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from svrctl.cli.app import App, SvrctlGroup, parse_json_option, pass_app
from svrctl.cli.render import echo_json, first_line, format_duration, format_time, table
from svrctl.exceptions import BadInputError

__all__ = ["task"]

F = Callable[..., Any]


@click.group(cls=SvrctlGroup)
def task() -> None:
    """Add, list, edit, enable, disable and remove tasks; show their history."""


def _task_options(func: F) -> F:
    """Options shared by ``task add`` and ``task edit``."""
    opts = [
        click.option("--server", help="Target server (an ssh task, or a plugin's target)."),
        click.option("--tag", help="Run on every enabled server with this tag."),
        click.option("--local", is_flag=True, default=None, help="Run on the worker's host."),
        click.option("--plugin", help="Run this plugin."),
        click.option("--command", help="The command to run."),
        click.option("--args", "args_json", help="JSON list (words) or object (--key value)."),
        click.option("--config", "config_json", help="Plugin config as a JSON object."),
        click.option("--description", help="Free text."),
        click.option("--schedule", help="Cron expression; '' for manual runs only."),
        click.option("--timezone", help="IANA time zone of the schedule."),
        click.option("--timeout", "timeout_seconds", type=int, help="Seconds (default 300)."),
        click.option("--retries", type=int, help="Retries after a failed attempt (default 0)."),
        click.option("--retry-delay", "retry_delay_seconds", type=int, help="Seconds."),
        click.option(
            "--overlap",
            "overlap_policy",
            type=click.Choice(["skip", "queue"]),
            help="When the previous run still runs: skip (default) or queue.",
        ),
        click.option(
            "--misfire-grace",
            "misfire_grace_seconds",
            type=int,
            help="A scheduled run later than this is recorded as missed (default 60).",
        ),
        click.option("--enabled/--disabled", "enabled", default=None, help="Enable or disable."),
        click.option("--pty/--no-pty", "pty", default=None, help="Run with a pty (e.g. for sudo)."),
        click.option(
            "--min-success",
            type=int,
            help="With --tag: succeed when at least N servers succeed (default: all).",
        ),
        click.option(
            "--only-if",
            "only_if",
            help="Check command run on the same target first; a non-zero exit skips the run "
            "('' to drop the check).",
        ),
        click.option(
            "--after",
            help="Chain: run this task when task AFTER's run ends ('' to unchain); see --on.",
        ),
        click.option(
            "--on",
            "after_on",
            type=click.Choice(["success", "failure", "any"]),
            help="With --after: run on its success (default), failure, or any end.",
        ),
        click.option(
            "--notify",
            help="Notification channels NAME[,NAME] ('' for the default set).",
        ),
        click.option(
            "--notify-after",
            "notify_after_failures",
            type=int,
            help="Announce a failure after N failed runs in a row (default 1).",
        ),
        click.option(
            "--notify-remind",
            "notify_remind_hours",
            type=float,
            help="While still failing, remind at most every HOURS ('0' never, the default).",
        ),
        click.option(
            "--notify-success/--no-notify-success",
            "notify_on_success",
            default=None,
            help="Also announce successes.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the task as JSON."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _common(options: dict[str, Any]) -> dict[str, Any]:
    """Turn CLI options into spec fields, keeping only those that were given."""
    from svrctl.admin import task_changes

    keys = (
        "description",
        "command",
        "schedule",
        "timezone",
        "timeout_seconds",
        "retries",
        "retry_delay_seconds",
        "overlap_policy",
        "misfire_grace_seconds",
        "enabled",
        "plugin",
        "pty",
        "min_success",
        "only_if",
        "after",
        "after_on",
        "notify",
        "notify_after_failures",
        "notify_on_success",
        "notify_remind_hours",
    )
    out = task_changes({key: options.get(key) for key in keys})
    if options.get("args_json") is not None:
        out["args"] = parse_json_option(options["args_json"], "--args")
    if options.get("config_json") is not None:
        config = parse_json_option(options["config_json"], "--config")
        if not isinstance(config, dict):
            raise BadInputError(
                "--config must be a JSON object, e.g. --config '{\"cpu_percent\": 90}'; "
                "`svrctl plugin show NAME` lists the plugin's settings",
                field="plugin_config",
            )
        out["plugin_config"] = config
    return out


def _target(options: dict[str, Any], current_kind: str | None) -> dict[str, Any]:
    """Work out a task's kind and target from --server, --tag, --plugin and --local."""
    server, tag, plugin, local = (options.get(k) for k in ("server", "tag", "plugin", "local"))
    if local and plugin:
        raise BadInputError("give either --local or --plugin, not both", field="kind")
    if server and tag:
        raise BadInputError("give either --server or --tag, not both", field="server")
    if plugin:
        if tag:
            raise BadInputError("a plugin task takes --server (or none), not --tag", field="tag")
        return {"kind": "plugin", "server": server, "tag": None}
    if local:
        if server or tag:
            raise BadInputError(
                "a --local task runs on the worker's host: drop --server/--tag", field="server"
            )
        return {"kind": "local", "server": None, "tag": None}
    if server or tag:
        if current_kind == "plugin":
            if tag:
                raise BadInputError("a plugin task takes --server, not --tag", field="tag")
            return {"server": server}
        return {"kind": "ssh", "server": server, "tag": tag}
    if current_kind is None:
        raise BadInputError(
            "a task needs a target: --server S or --tag T (with --command), "
            "--plugin P [--server S], or --local (with --command)",
            field="kind",
        )
    return {}


@task.command("add")
@click.argument("name")
@_task_options
@pass_app
def add_cmd(app: App, /, name: str, as_json: bool, **options: Any) -> None:
    """Add a task."""
    from svrctl.admin import add_task_entry
    from svrctl.cli.sync import feedback

    fields = {"name": name} | _target(options, None) | _common(options)
    data = add_task_entry(app.db(), app.settings, fields, feedback())
    _print_saved("added", data, as_json, app.settings.timezone)


@task.command("edit")
@click.argument("name")
@_task_options
@pass_app
def edit_cmd(app: App, /, name: str, as_json: bool, **options: Any) -> None:
    """Change a task; options not given stay as they are."""
    from svrctl.admin import edit_task_entry
    from svrctl.cli.sync import feedback

    def changes(kind: str | None) -> dict[str, Any]:
        return _target(options, kind) | _common(options)

    data = edit_task_entry(app.db(), app.settings, name, changes, feedback())
    _print_saved("updated", data, as_json, app.settings.timezone)


def _server_of(session: Any, server_id: int | None) -> str | None:
    from sqlalchemy import select

    from svrctl.db.models import Server

    if server_id is None:
        return None
    name: str | None = session.scalar(select(Server.name).where(Server.id == server_id))
    return name


def _when(schedule: str, after: str | None, on: str | None) -> str:
    """Say when a task runs: its schedule, its chain, or manually."""
    parts = [schedule] if schedule else []
    if after:
        parts.append(f"after {after}" + ("" if on == "success" else f" ({on})"))
    return ", ".join(parts) or "manual"


def _after_of(session: Any, row: Any) -> str | None:
    from svrctl.tasks import task_name_of

    return task_name_of(session, row.after_task_id)


def _target_text(data: dict[str, Any]) -> str:
    if data["kind"] == "plugin":
        return f"plugin {data['plugin']} on {data['server'] or 'the local host'}"
    if data["kind"] == "local":
        return "local command"
    where = data["server"] or f"servers tagged {data['tag']}"
    return f"command on {where}"


def _print_saved(verb: str, data: dict[str, Any], as_json: bool, zone: str) -> None:
    if as_json:
        echo_json(data)
        return
    schedule = (
        f"schedule '{data['schedule']}' ({data['timezone']})"
        if data["schedule"]
        else ("manual runs only")
    )
    state = "" if data["enabled"] else ", disabled"
    chain = f", after {data['after']} ({data['after_on']})" if data.get("after") else ""
    check = f", only if `{data['only_if']}` succeeds" if data.get("only_if") else ""
    click.echo(
        f"✓ {verb} task {data['name']}: {_target_text(data)}, {schedule}{chain}{check}{state}"
    )
    if data["next_run_at"]:
        from datetime import datetime

        when = datetime.fromisoformat(data["next_run_at"])
        click.echo(f"  next run: {format_time(when, data['timezone'])}")


@task.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_cmd(app: App, as_json: bool) -> None:
    """List tasks."""
    from svrctl.tasks import list_tasks, task_to_dict

    with app.db().read() as session:
        rows = list_tasks(session)
    names: dict[int | None, str] = {t.id: t.name for t, _ in rows}
    if as_json:
        echo_json([task_to_dict(t, server, names.get(t.after_task_id)) for t, server in rows])
        return
    table(
        ["NAME", "KIND", "TARGET", "SCHEDULE", "ENABLED", "LAST", "RUNS", "NEXT RUN"],
        [
            [
                t.name,
                t.plugin if t.kind == "plugin" else t.kind,
                server or (f"tag:{t.server_tag}" if t.server_tag else "local"),
                _when(t.schedule, names.get(t.after_task_id), t.after_on),
                t.enabled,
                t.last_status,
                t.run_count,
                format_time(t.next_run_at, t.timezone) if t.next_run_at else None,
            ]
            for t, server in rows
        ],
    )


@task.command("show")
@click.argument("name")
@click.option("-n", "count", type=click.IntRange(0, 100), default=5, help="Fire times to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show_cmd(app: App, name: str, count: int, as_json: bool) -> None:
    """Show one task, with the next fire times of its schedule."""
    from svrctl.tasks import chained_after, get_task, next_runs, task_to_dict

    with app.db().read() as session:
        row = get_task(session, name)
        data = task_to_dict(row, _server_of(session, row.server_id), _after_of(session, row))
        data["chained_after"] = chained_after(session, row)
    upcoming = next_runs(data["schedule"], data["timezone"], count) if data["enabled"] else []
    data["next_fire_times"] = [t.isoformat() for t in upcoming]
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key == "next_fire_times":
            continue
        click.echo(f"{key + ':':<22} {_show_value(value)}")
    if not data["schedule"]:
        click.echo("next runs:             none (manual runs only)")
    elif not data["enabled"]:
        click.echo("next runs:             none (the task is disabled)")
    else:
        click.echo(f"next runs ({data['timezone']}):")
        for when in upcoming:
            click.echo(f"  {format_time(when, data['timezone'])}")


def _show_value(value: Any) -> str:
    import json

    if value is None or value == "":
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@task.command("rm")
@click.argument("name")
@pass_app
def rm_cmd(app: App, name: str) -> None:
    """Remove a task and its history."""
    from svrctl.admin import remove_task_entry
    from svrctl.cli.sync import feedback

    remove_task_entry(app.db(), app.settings, name, feedback())
    click.echo(f"✓ removed task {name}")


@task.command("enable")
@click.argument("name")
@pass_app
def enable_cmd(app: App, name: str) -> None:
    """Enable a task: its schedule fires again."""
    _set_enabled(app, name, True)


@task.command("disable")
@click.argument("name")
@pass_app
def disable_cmd(app: App, name: str) -> None:
    """Disable a task: its schedule stops firing and runs are refused unless forced."""
    _set_enabled(app, name, False)


def _set_enabled(app: App, name: str, enabled: bool) -> None:
    from svrctl.admin import set_task_enabled
    from svrctl.cli.sync import feedback

    set_task_enabled(app.db(), app.settings, name, enabled, feedback())
    click.echo(f"✓ {'enabled' if enabled else 'disabled'} task {name}")


@task.command("history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, help="Rows to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def history_cmd(app: App, name: str, limit: int, as_json: bool) -> None:
    """Show a task's latest runs, newest first."""
    from svrctl.tasks import get_task, history_to_dict, recent_history

    with app.db().read() as session:
        rows = recent_history(session, get_task(session, name), limit)
    if as_json:
        echo_json([history_to_dict(r) for r in rows])
        return
    zone = app.settings.timezone
    table(
        ["ID", "STATUS", "STARTED", "DURATION", "EXIT", "TRY", "BY", "SERVER", "SUMMARY"],
        [
            [
                r.id,
                r.status,
                format_time(r.started_at, zone),
                format_duration(r.duration_ms),
                r.exit_code,
                r.attempt,
                r.triggered_by,
                r.server_name,
                first_line(r.error) or first_line(r.output),
            ]
            for r in rows
        ],
    )


@task.command("stats")
@click.argument("name")
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=7,
    show_default=True,
    help="Window: runs that started in the last N days.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def stats_cmd(app: App, name: str, days: int, as_json: bool) -> None:
    """Show a task's runs over a window: counts by status, success rate, durations, last ends."""
    from svrctl.tasks import get_task, task_stats

    with app.db().read() as session:
        data = task_stats(session, get_task(session, name), days)
    if as_json:
        echo_json(data)
        return
    _print_stats(data, app.settings.timezone)


def _print_stats(data: dict[str, Any], zone: str) -> None:
    """Print ``task stats`` for people."""
    from datetime import datetime

    def when(value: str | None) -> str:
        return format_time(datetime.fromisoformat(value), zone) if value else "-"

    by_status = ", ".join(f"{s} {n}" for s, n in data["by_status"].items())
    rate = data["success_rate"]
    failure = when(data["last_failure_at"])
    if data["last_failure_status"]:
        failure += f" ({data['last_failure_status']})"
    every = data["all_time"]
    click.echo(f"task {data['task']}, last {data['days']} days (since {when(data['since'])}):")
    click.echo(f"  runs:          {data['runs']}" + (f" ({by_status})" if by_status else ""))
    click.echo(f"  success rate:  {'-' if rate is None else f'{rate * 100:.1f} %'}")
    click.echo(
        f"  duration:      median {format_duration(data['duration_median_ms'])}, "
        f"p95 {format_duration(data['duration_p95_ms'])}"
    )
    click.echo(f"  last success:  {when(data['last_success_at'])}")
    click.echo(f"  last failure:  {failure}")
    click.echo(
        f"  all time:      {every['run_count']} runs, {every['success_count']} succeeded, "
        f"{every['failure_count']} failed"
    )


@task.command("run")
@click.argument("name")
@click.option("--force", is_flag=True, help="Run even if the task is disabled.")
@click.option(
    "--at",
    "at",
    metavar="WHEN",
    help="Schedule one run through Prefect at WHEN ('YYYY-MM-DD HH:MM[:SS]' in the task's "
    "time zone, ISO 8601 with an offset, or now+90s) and return.",
)
@click.option("--tz", "tz", metavar="ZONE", help="With --at: the zone of a naive WHEN.")
@click.option("--via-prefect", is_flag=True, help="Run now through the task's deployment and wait.")
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0),
    help="With --via-prefect: seconds to wait for the end (default 600; exit 3 after).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the TaskExecutionResult as JSON.")
@pass_app
def run_cmd(
    app: App,
    name: str,
    force: bool,
    as_json: bool,
    at: str | None = None,
    tz: str | None = None,
    via_prefect: bool = False,
    wait_timeout: float | None = None,
) -> None:
    """Run a task now and show its result (exit 1 if it failed).

    By default it runs in this process; --via-prefect has a worker of the task's work
    pool run it, and --at schedules it for later (see docs/deployments.md).
    """
    _check_run_options(at, tz, via_prefect, wait_timeout)
    if at is not None:
        from svrctl.oneoff import schedule_once

        schedule_once(app, name, at, zone=tz, force=force, as_json=as_json)
        return
    if via_prefect:
        from svrctl.oneoff import run_through_prefect

        result = run_through_prefect(app, name, force=force, wait_timeout=wait_timeout)
    else:
        result = _run_in_process(app, name, force)
    skipped = result.status == "skipped"  # the --only-if check said no: not a failure
    if as_json:
        echo_json(result.model_dump())
    elif result.success:
        click.echo(f"✓ success in {result.duration_ms} ms")
    elif skipped:
        reason = result.error or ""
        click.echo(f"– {reason}" if reason.startswith("skipped") else f"– skipped: {reason}")
    else:
        click.echo(f"✗ {result.status} after {result.duration_ms} ms: {result.error}")
    if not as_json and result.output:
        click.echo(result.output.rstrip("\n"))
    if not result.success and not skipped:
        raise SystemExit(1)


def _check_run_options(
    at: str | None, tz: str | None, via_prefect: bool, wait_timeout: float | None
) -> None:
    """Refuse option combinations of ``task run`` that mean nothing."""
    if tz is not None and at is None:
        raise BadInputError("--tz applies only with --at WHEN", field="tz")
    if wait_timeout is not None and (at is not None or not via_prefect):
        raise BadInputError(
            "--wait-timeout applies only with --via-prefect (a run scheduled with --at is "
            "not waited for)",
            field="wait-timeout",
        )


def _run_in_process(app: App, name: str, force: bool) -> Any:
    """Run the task in this process (Prefect's engine, this process's API); return its result."""
    import asyncio

    from svrctl.prefect_api import choose_api
    from svrctl.tasks import get_task

    with app.db().read() as session:
        task_id = get_task(session, name).id
    choose_api(app.settings, lambda msg: click.echo(f"warning: {msg}", err=True))
    from svrctl.flows.run_task import run_task

    state = asyncio.run(run_task(task_id=task_id, force=force, return_state=True))
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result
