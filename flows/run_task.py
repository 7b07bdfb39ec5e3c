"""The ``run-task`` flow: one generic flow that runs any task by its id."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import anyio
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Completed, Failed
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from svrctl.db.models import RunStatus, TriggeredBy, utcnow
from svrctl.exceptions import BadInputError, DatabaseUnavailableError
from svrctl.execution.cancel import run_sync_cancellable
from svrctl.execution.engine import RunRequest, TaskExecutionResult, execute_task
from svrctl.runtime import app_database, app_settings
from svrctl.settings import Settings
from svrctl.specs import check_task_id

__all__ = ["SKIPPED_STATE_NAME", "run_task"]

# Live output lines sent to the run log per run; the full output is in history.
LIVE_LINE_CAP = 2000
# Name of the COMPLETED state a skipped run ends in (event prefect.flow-run.Skipped).
SKIPPED_STATE_NAME = "Skipped"
# How long past the notification timeout a run waits for its notifications at most.
NOTIFY_GRACE_SECONDS = 5.0


def _run_name() -> str:
    """Name a flow run after its task and the time it started."""
    from svrctl.db.models import Task

    task_id = runtime_flow_run.parameters.get("task_id")
    name = f"task-{task_id}"
    try:
        with app_database().read() as session:
            task = session.get(Task, int(task_id))
            if task is not None:
                name = task.name
    except Exception:  # naming must never stop a run
        logging.getLogger("svrctl").debug("could not name the flow run", exc_info=True)
    return f"{name}-{utcnow():%Y%m%d-%H%M%S}"


def _trigger() -> tuple[TriggeredBy, Any]:
    """Tell what started this flow run, and when it was scheduled for."""
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None or run.deployment_id is None:
        return TriggeredBy.MANUAL, None
    if run.auto_scheduled:
        return TriggeredBy.SCHEDULE, run.expected_start_time
    created_by = getattr(run, "created_by", None)
    if created_by is not None and str(getattr(created_by, "type", "")).upper() == "AUTOMATION":
        return TriggeredBy.CHAIN, None
    return TriggeredBy.API, None


@flow(
    name="run-task",
    flow_run_name=_run_name,
    description="Run one svrctl task by id: its command over SSH, locally, or a plugin.",
    persist_result=False,
    validate_parameters=True,
)
async def run_task(task_id: int, force: bool = False) -> TaskExecutionResult | State[Any]:
    """Run the task ``task_id`` once, with its timeout and retries, and record its history.

    Args:
        task_id: Id of the task in svrctl's database (see `svrctl task show NAME`).
        force: Run the task even if it is disabled.
    """
    logger = get_run_logger()
    try:
        check_task_id(task_id)
    except BadInputError as exc:
        return _refused(logger, exc)
    settings = app_settings()
    db = app_database(settings)
    triggered_by, scheduled_at = _trigger()
    ctx = FlowRunContext.get()
    flow_run_id = str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
    sent = 0

    def on_line(server: str, stream: str, line: str) -> None:
        nonlocal sent
        sent += 1
        if sent <= LIVE_LINE_CAP:
            logger.info("[%s%s] %s", server, "" if stream == "stdout" else " stderr", line)
        elif sent == LIVE_LINE_CAP + 1:
            logger.info("… live output stops here; the history row keeps the output")

    request = RunRequest(
        task_id=task_id,
        force=force,
        triggered_by=triggered_by,
        flow_run_id=flow_run_id,
        scheduled_at=scheduled_at,
        log=logger,
        on_line=on_line,
    )
    await _finish_dead_runs(task_id)
    # Cancelling the flow run stops the step's command and finishes its rows as cancelled.
    try:
        result = await run_sync_cancellable(
            lambda cancel: execute_task(db, settings, replace(request, cancel=cancel))
        )
    except BadInputError as exc:  # no such task: nothing ran, nothing to record
        return _refused(logger, exc)
    except (OperationalError, InterfaceError) as exc:
        raise _database_unavailable(settings, exc) from exc
    # Notifications (after every history row is final) run in a thread beside the artifacts.
    await asyncio.gather(
        _artifacts(settings, result, flow_run_id), _notify(settings, result, flow_run_id)
    )
    return _final_state(result)


def _database_unavailable(settings: Settings, exc: DBAPIError) -> DatabaseUnavailableError:
    """Say that the app database failed the run: where it is, what the driver said, what next."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url)
    where = url.render_as_string(hide_password=True)
    said = next((ln.strip() for ln in str(exc.orig).splitlines() if ln.strip()), type(exc).__name__)
    state = "failed" if url.get_backend_name() == "sqlite" else "is unreachable"
    return DatabaseUnavailableError(
        f"the app database {where} {state} ({said}): this run's result could not be "
        "recorded. Once the database is back, its rows left running are marked crashed "
        "(by the task's next run, or the reconcile-runs flow)."
    )


async def _finish_dead_runs(task_id: int) -> None:
    """Finish the task's rows left ``running`` by a run that is over in Prefect.

    A run whose process died (a killed worker) keeps its rows ``running`` until
    reconciliation; the overlap check would take them for a run still going and
    record this run ``missed``. Prefect only lets this run start once the dead one
    is over (it held the deployment's concurrency slot), so its rows are finished
    here first, as the ``reconcile-runs`` flow would. Never stops the run.
    """
    from svrctl.execution.reconcile import reconcile_running
    from svrctl.flows.maintenance import flow_run_state

    try:
        fixed = await reconcile_running(app_database(), flow_run_state, task_id=task_id)
    except Exception as exc:
        get_run_logger().warning(
            "could not check for rows left running by an earlier run: %s: %s",
            type(exc).__name__,
            exc,
        )
        return
    if fixed:
        get_run_logger().warning(
            "marked %d history row(s) of an earlier run crashed: its flow run is over "
            "(the process running it died)",
            len(fixed),
        )


async def _notify(settings: Settings, result: TaskExecutionResult, flow_run_id: str | None) -> None:
    """Run the notification hook off the event loop; never fails, never waits for long.

    The hook's own delivery is bounded by ``notify_timeout_seconds``; the flow stops
    waiting for it NOTIFY_GRACE_SECONDS later whatever happens (the thread then
    finishes on its own).
    """
    from svrctl.notify.after_run import notify_after_run, run_from_result

    logger = get_run_logger()
    db = app_database(settings)
    try:
        with anyio.move_on_after(settings.notify_timeout_seconds + NOTIFY_GRACE_SECONDS):
            sent = await anyio.to_thread.run_sync(
                lambda: notify_after_run(db, settings, run_from_result(result, flow_run_id)),
                abandon_on_cancel=True,
            )
            for r in sent:
                if r.ok:
                    logger.info("Notification sent to %s", r.channel)
                else:
                    logger.warning("Notification to %s failed: %s", r.channel, r.error)
            return
        logger.warning("Notifications still sending after the timeout; the run goes on")
    except Exception as exc:  # never fail the run for a notification
        logger.warning("Notifications failed: %s", exc.__class__.__name__)


def _refused(logger: Any, exc: BadInputError) -> State[Any]:
    """End a run whose parameters name no task: the reason in one log line, no traceback."""
    logger.error("Run refused: %s", exc.message)
    return Failed(message=exc.message)


def _final_state(result: TaskExecutionResult) -> State[Any]:
    """Return the flow run's final state for ``result``.

    A skipped run (the task's --only-if check said no) is neither a success nor a
    failure: it ends COMPLETED but named ``Skipped``, so Prefect emits
    ``prefect.flow-run.Skipped`` and automations that match ``prefect.flow-run.Completed``
    (chains on success) do not fire for it.
    """
    if result.status == RunStatus.SKIPPED.value:
        return Completed(name=SKIPPED_STATE_NAME, message=result.error or "skipped", data=result)
    if not result.success:
        return Failed(message=f"{result.status}: {result.error}", data=result)
    return Completed(message="success", data=result)


async def _artifacts(
    settings: Settings, result: TaskExecutionResult, flow_run_id: str | None
) -> None:
    """Show the run in Prefect's UI, and refresh the views it changed (svrctl.views)."""
    db = app_database(settings)

    def load() -> tuple[str, str, bool]:
        from svrctl.db.models import Server, Task

        with db.read() as session:
            task = session.get(Task, result.task_id)
            if task is None:
                return "", "", False
            server = session.get(Server, task.server_id) if task.server_id else None
            target = (
                server.name
                if server
                else (f"tag {task.server_tag}" if task.server_tag else "local")
            )
            command = task.command or f"plugin {task.plugin}"
            return target, command, task.plugin is not None and task.command is None

    target, command, plugin = await anyio.to_thread.run_sync(load)
    skipped = result.status == RunStatus.SKIPPED.value
    mark = "–" if skipped else ("✓" if result.success else "✗")
    tail = result.output[-4000:]
    fence = "~~~~"
    body = "\n".join(
        [
            f"### {mark} {result.task_name}: {result.status}",
            "",
            "| | |",
            "|---|---|",
            f"| server | {_cell(target)} |",
            f"| command | `{_cell(command)}` |",
            f"| exit code | {result.exit_code if result.exit_code is not None else '-'} |",
            f"| duration | {result.duration_ms} ms |",
            f"| attempts | {result.attempts} |",
            "",
            *([f"**Error:** {_cell(result.error)}", ""] if result.error else []),
            *(_plugin_body(result) if plugin else ["Output (tail):", "", fence, tail, fence]),
        ]
    )
    await asyncio.gather(
        acreate_markdown_artifact(markdown=body, description=f"Run of {result.task_name}"),
        _views(settings, result.task_id, flow_run_id),
    )


async def _views(settings: Settings, task_id: int, flow_run_id: str | None) -> None:
    """Refresh the views of a run; a view that cannot be written never fails the run."""
    from svrctl.flows.views import publish_after_run

    try:
        await publish_after_run(settings, task_id, flow_run_id)
    except Exception as exc:
        get_run_logger().warning("Views not refreshed: %s", exc.__class__.__name__)


def _plugin_body(result: TaskExecutionResult) -> list[str]:
    """A plugin's findings as markdown: its own summary and details, then its metrics."""
    lines = [result.output[-8000:], ""]
    if result.metrics:
        lines += ["**Metrics**", "", "| server | metric | value | unit | labels |"]
        lines.append("|---|---|---|---|---|")
        for m in result.metrics[:200]:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(m.get("labels", {}).items()))
            lines.append(
                f"| {_cell(m.get('server'))} | {_cell(m.get('name'))} | {m.get('value'):g} "
                f"| {_cell(m.get('unit'))} | {_cell(labels)} |"
            )
    return lines


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")
