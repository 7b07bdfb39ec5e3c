"""One-off runs of a task through Prefect: ``svrctl task run NAME --at WHEN | --via-prefect``.

Both create a flow run of the task's deployment (``run-task/NAME``), so a worker of
the deployment's work pool runs it, exactly like a run made by the task's schedule
or by *Quick run* in Prefect's UI:

* ``--at WHEN`` creates it in state *Scheduled* for that time and returns: Prefect's
  UI lists it among the deployment's upcoming runs, and the worker starts it on time.
* ``--via-prefect`` creates it for now, waits until it ends, and reads its result
  from the history rows the run wrote in the app database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from svrctl.exceptions import BadInputError, SvrctlError
from svrctl.execution.engine import TaskExecutionResult

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

    from svrctl.cli.app import App
    from svrctl.db.engine import Database
    from svrctl.db.models import TaskHistory

__all__ = [
    "DEFAULT_WAIT_TIMEOUT",
    "NoDeploymentError",
    "PrefectRunResult",
    "parse_when",
    "run_through_prefect",
    "schedule_once",
    "ui_url",
]

DEFAULT_WAIT_TIMEOUT = 600.0
# A time this far in the past is still taken (as "now"): the command took a moment.
PAST_TOLERANCE = timedelta(seconds=5)
# How long a run may wait for a worker before the waiting line says so.
WORKER_NOTE_AFTER = 3.0
POLL_SECONDS = 0.25
EXIT_WAIT_TIMEOUT = 3
EXIT_INTERRUPTED = 130
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

_RELATIVE = re.compile(r"now\s*\+\s*(\d+)\s*([smhd]?)", re.IGNORECASE)
_ABSOLUTE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class NoDeploymentError(SvrctlError):
    """The task has no deployment in Prefect (yet), so Prefect cannot run it."""

    exit_code = 2


class PrefectUnavailableError(SvrctlError):
    """No Prefect API answers, so nothing can be run through it."""

    exit_code = 2


class PrefectRunResult(TaskExecutionResult):
    """A TaskExecutionResult of a run made through Prefect, with its flow run's id."""

    flow_run_id: str


@dataclass
class _Target:
    """The task and its deployment, as Prefect knows it."""

    task_id: int
    task_name: str
    timezone: str
    deployment_id: UUID
    deployment_name: str
    work_pool: str | None
    api_url: str


# ----------------------------------------------------------------------------- parsing


def parse_when(text: str, zone: str, *, now: datetime | None = None) -> datetime:
    """Parse ``--at WHEN`` into an aware UTC time that is not in the past.

    Accepted: ``YYYY-MM-DD HH:MM[:SS]`` (or with ``T``), in ``zone``; ISO 8601 with
    an offset or ``Z`` (the offset wins over ``zone``); ``now+N[s|m|h|d]``.

    Raises:
        BadInputError: The text is none of those, names a time that does not exist
            in ``zone`` (a DST gap), or a time more than a few seconds in the past.
    """
    now = now or datetime.now(UTC)
    raw = text.strip()
    tz = _zone(zone)
    relative = _RELATIVE.fullmatch(raw)
    if relative:
        return now + timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2).lower()])
    if not _ABSOLUTE.fullmatch(raw):
        raise BadInputError(
            f"--at {text!r} is not a time: write 'YYYY-MM-DD HH:MM[:SS]' (in the task's time "
            "zone, or --tz ZONE), ISO 8601 with an offset ('2026-12-01T03:00:00+01:00'), or "
            "'now+90s' / 'now+10m'",
            field="at",
        )
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadInputError(f"--at {text!r} is not a valid time: {exc}", field="at") from None
    if parsed.tzinfo is None:
        local = parsed.replace(tzinfo=tz)
        if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != parsed:
            raise BadInputError(
                f"--at {text!r} does not exist in {zone}: the clocks skip that hour "
                "(daylight saving time); pick another time",
                field="at",
            )
        parsed = local
    when = parsed.astimezone(UTC)
    if when < now - PAST_TOLERANCE:
        raise BadInputError(
            f"--at {text!r} is in the past ({when:%Y-%m-%d %H:%M:%S} UTC; it is now "
            f"{now:%Y-%m-%d %H:%M:%S} UTC): give a future time, or run it now with "
            "`--via-prefect`",
            field="at",
        )
    return when


def _zone(zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInputError(
            f"--tz {zone!r} is not a known IANA time zone (e.g. Europe/Berlin, UTC)", field="tz"
        ) from None


def ui_url(api_url: str, flow_run_id: UUID | str) -> str:
    """Return the Prefect UI page of a flow run: the API URL without ``/api``."""
    base = api_url.rstrip("/")
    if base.endswith("/api"):
        base = base[: -len("/api")]
    return f"{base}/runs/flow-run/{flow_run_id}"


# ----------------------------------------------------------------------------- Prefect


def _require_api(app: App, what: str) -> str:
    from svrctl.prefect_api import reload_prefect_settings
    from svrctl.sync import find_api

    target = find_api(app.settings)
    if target.url is None:
        raise PrefectUnavailableError(
            f"cannot {what}: {target.problem}. Start Prefect (`svrctl up`) or point "
            "PREFECT_API_URL at a running Prefect server; or run the task in this process "
            "(without --at / --via-prefect)."
        )
    import os

    if os.environ.get("PREFECT_API_URL") != target.url:
        os.environ["PREFECT_API_URL"] = target.url
        reload_prefect_settings()
    return target.url


def _client(url: str) -> SyncPrefectClient:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    return SyncPrefectClient(
        url,
        api_key=api.key.get_secret_value() if api.key else None,
        auth_string=api.auth_string.get_secret_value() if api.auth_string else None,
    )


@contextmanager
def _target(app: App, name: str, what: str) -> Iterator[tuple[_Target, SyncPrefectClient]]:
    """Find the task, a Prefect API and the task's deployment there; yield them with a client."""
    from prefect.exceptions import ObjectNotFound

    from svrctl.tasks import get_task

    with app.db().read() as session:
        task = get_task(session, name)
        task_id, zone, deployment_id = task.id, task.timezone, task.deployment_id
    url = _require_api(app, what)
    fix = (
        f"run `svrctl sync` (it creates the deployments of all tasks), then "
        f"`svrctl task run {name}` with the same options again"
    )
    if not deployment_id:
        raise NoDeploymentError(
            f"cannot {what}: task {name} has no Prefect deployment yet (it was saved while "
            f"Prefect was not reachable): {fix}."
        )
    with _client(url) as client:
        try:
            deployment = client.read_deployment(UUID(deployment_id))
        except ObjectNotFound:
            raise NoDeploymentError(
                f"cannot {what}: the deployment {deployment_id} of task {name} does not exist "
                f"in the Prefect API at {url} (deleted, or another Prefect server): {fix}."
            ) from None
        target = _Target(
            task_id=task_id,
            task_name=name,
            timezone=zone,
            deployment_id=deployment.id,
            deployment_name=f"run-task/{deployment.name}",
            work_pool=deployment.work_pool_name,
            api_url=url,
        )
        yield target, client


def _workers_online(client: SyncPrefectClient, pool: str | None) -> bool | None:
    """Tell whether a worker polls ``pool`` (None: cannot tell)."""
    from prefect.client.schemas.objects import WorkerStatus

    if pool is None:
        return None
    try:
        workers = client.read_workers_for_work_pool(pool)
        paused = client.read_work_pool(pool).is_paused
    except Exception:  # a missing pool, an old server: only a hint is lost
        return None
    return not paused and any(w.status == WorkerStatus.ONLINE for w in workers)


def _no_worker_hint(client: SyncPrefectClient, pool: str | None) -> str | None:
    online = _workers_online(client, pool)
    if online is False:
        start = "`svrctl up` runs one, or " if pool == "svrctl" else ""
        return (
            f"no worker polls the work pool {pool} right now: the run starts only once one "
            f"does ({start}`svrctl worker --pool {pool}`; see docs/workers.md)"
        )
    return None


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _note(message: str) -> None:
    click.echo(message, err=True)


# ----------------------------------------------------------------------------- --at


def schedule_once(
    app: App, name: str, when_text: str, *, zone: str | None, force: bool, as_json: bool
) -> dict[str, Any]:
    """Schedule one run of the task ``name`` at ``when_text`` through Prefect; print it.

    Naive times are in ``zone``, else in the task's time zone.

    Returns:
        What was printed with ``--json``.
    """
    from svrctl.tasks import get_task

    if zone is not None:
        _zone(zone)  # a bad --tz is refused before anything else
    with app.db().read() as session:
        task_zone = get_task(session, name).timezone
    when = parse_when(when_text, zone or task_zone)
    with _target(app, name, f"schedule a run of task {name}") as (target, client):
        from prefect.states import Scheduled

        run = client.create_flow_run_from_deployment(
            target.deployment_id,
            parameters={"task_id": target.task_id, "force": force},
            state=Scheduled(scheduled_time=when),
        )
        hint = _no_worker_hint(client, target.work_pool)
    link = ui_url(target.api_url, run.id)
    data = {
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
        "state": "SCHEDULED",
        "scheduled_at": when.isoformat(),
        "scheduled_at_local": when.astimezone(ZoneInfo(task_zone)).isoformat(),
        "timezone": task_zone,
        "task": name,
        "task_id": target.task_id,
        "force": force,
        "deployment_id": str(target.deployment_id),
        "deployment": target.deployment_name,
        "work_pool": target.work_pool,
        "ui_url": link,
    }
    if as_json:
        from svrctl.cli.render import echo_json

        echo_json(data)
    else:
        from svrctl.cli.render import format_time

        click.echo(
            f"✓ scheduled a run of task {name} for {format_time(when, task_zone)} "
            f"({when:%Y-%m-%d %H:%M:%S} UTC)"
        )
        click.echo(f"  flow run: {run.name} ({run.id})")
        click.echo(f"  pool:     {target.work_pool}")
        click.echo(f"  Prefect:  {link}")
        click.echo(f"  its result shows in `svrctl task history {name}` once it ran")
    if hint:
        _warn(hint)
    return data


# ----------------------------------------------------------------------------- --via-prefect


def run_through_prefect(
    app: App, name: str, *, force: bool, wait_timeout: float | None
) -> PrefectRunResult:
    """Run the task ``name`` now through its deployment and wait for the result.

    Progress goes to stderr. Exits 3 when the run has not ended after
    ``wait_timeout`` seconds and 130 on Ctrl-C; the run goes on in Prefect then.
    """
    timeout = DEFAULT_WAIT_TIMEOUT if wait_timeout is None else wait_timeout
    with _target(app, name, f"run task {name} through Prefect") as (target, client):
        run = client.create_flow_run_from_deployment(
            target.deployment_id, parameters={"task_id": target.task_id, "force": force}
        )
        link = ui_url(target.api_url, run.id)
        try:  # from here on, Ctrl-C leaves the run to Prefect
            _note(f"flow run {run.name} ({run.id}) of {target.deployment_name} created: {link}")
            hint = _no_worker_hint(client, target.work_pool)
            if hint:
                _warn(hint)
            final = _wait(client, run, target, timeout)
        except KeyboardInterrupt:
            _note(
                f"\ninterrupted: stopped waiting; flow run {run.id} goes on in Prefect. "
                f"Watch it at {link} or with `prefect flow-run inspect {run.id}`; its result "
                f"shows in `svrctl task history {name}`."
            )
            raise SystemExit(EXIT_INTERRUPTED) from None
    if final is None:
        _note(
            f"error: flow run {run.id} has not ended after {timeout:g} s (--wait-timeout); it "
            f"goes on in Prefect: watch it at {link} or with `prefect flow-run inspect "
            f"{run.id}`; its result shows in `svrctl task history {name}`."
        )
        raise SystemExit(EXIT_WAIT_TIMEOUT)
    return _result(app.db(), target, final)


def _wait(
    client: SyncPrefectClient, run: FlowRun, target: _Target, timeout: float
) -> FlowRun | None:
    """Poll the flow run until it ends; say what it waits for. None: timed out."""
    started = time.monotonic()
    said: set[str] = set()
    while True:
        run = client.read_flow_run(run.id)
        kind = run.state.type.value if run.state is not None else "SCHEDULED"
        if kind in FINAL_STATES:
            return run
        waited = time.monotonic() - started
        if kind in ("SCHEDULED", "PENDING") and waited >= WORKER_NOTE_AFTER:
            if "waiting" not in said:
                said.add("waiting")
                state = run.state_name or kind.title()
                _note(f"… {state}: waiting for a worker on pool {target.work_pool}")
        elif kind == "RUNNING" and "running" not in said:
            said.add("running")
            _note("… running")
        elif kind == "PAUSED" and "paused" not in said:
            said.add("paused")
            _note("… paused in Prefect: resume it there, or press Ctrl-C to stop waiting")
        if waited >= timeout:
            return None
        time.sleep(min(POLL_SECONDS, max(timeout - waited, 0.01)))


def _rows(db: Database, flow_run_id: str) -> list[TaskHistory]:
    from sqlalchemy import select

    from svrctl.db.models import TaskHistory

    with db.read() as session:
        return list(
            session.scalars(
                select(TaskHistory)
                .where(TaskHistory.flow_run_id == flow_run_id)
                .order_by(TaskHistory.id)
            )
        )


def _result(db: Database, target: _Target, run: FlowRun) -> PrefectRunResult:
    """Build the run's result from its history rows (the flow's own result is not kept)."""
    state = run.state.type.value if run.state is not None else "CRASHED"
    rows = _rows(db, str(run.id))
    base: dict[str, Any] = {
        "task_id": target.task_id,
        "task_name": target.task_name,
        "flow_run_id": str(run.id),
        "history_ids": [r.id for r in rows],
        "attempts": max((r.attempt for r in rows), default=0),
        "duration_ms": _duration_ms(rows, run),
    }
    skipped = state == "COMPLETED" and run.state is not None and run.state.name == "Skipped"
    success = state == "COMPLETED" and not skipped
    if skipped and len({r.server_name for r in rows}) != 1:
        message = run.state.message if run.state is not None else None
        return PrefectRunResult(
            **base, success=False, output="", error=message or "skipped", status="skipped"
        )
    if not rows:
        message = (run.state.message if run.state is not None else None) or "no result"
        status = "cancelled" if state == "CANCELLED" else ("success" if success else "crashed")
        return PrefectRunResult(
            **base,
            success=success,
            output="",
            error=None if success else f"the flow run ended {state}: {message}",
            status=status,
        )
    last: dict[str | None, TaskHistory] = {}
    for row in rows:  # the last attempt on each server counts
        last[row.server_name] = row
    finals = list(last.values())
    if len(finals) == 1:
        only = finals[0]
        status = only.status if only.finished_at is not None else "crashed"
        error = only.error
        if not success and error is None:
            error = run.state.message if run.state is not None else None
        return PrefectRunResult(
            **base,
            success=success,
            output=only.output,
            error=None if success else error,
            exit_code=only.exit_code,
            status=status,
        )
    output = "\n".join(f"== {r.server_name}: {r.status} ==\n{r.output}".rstrip() for r in finals)
    codes = {r.exit_code for r in finals}
    error = None
    status = "success"
    if not success:
        # The flow's Failed state says "<status>: <error>", the engine's own summary.
        message = (run.state.message if run.state is not None else None) or ""
        head, sep, rest = message.partition(": ")
        from svrctl.db.models import RunStatus

        known = {s.value for s in RunStatus}
        status = (
            head if sep and head in known else ("cancelled" if state == "CANCELLED" else "failed")
        )
        error = rest if sep and head in known else (message or f"the flow run ended {state}")
    return PrefectRunResult(
        **base,
        success=success,
        output=output,
        error=error,
        exit_code=codes.pop() if len(codes) == 1 else None,
        status=status,
    )


def _duration_ms(rows: list[TaskHistory], run: FlowRun) -> int:
    ends = [r.finished_at for r in rows if r.finished_at is not None]
    if rows and ends:
        return int((max(ends) - min(r.started_at for r in rows)).total_seconds() * 1000)
    return int((run.total_run_time or timedelta()).total_seconds() * 1000)
