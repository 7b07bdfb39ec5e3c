"""Execute one run of a task: the seed's ``execute_task``, independent of Prefect.

A run loads its task, refuses a disabled one (unless forced), drops a stale
scheduled run as ``missed``, honours the overlap policy, runs its step on every
target with the task's timeout, retries failed targets with exponential backoff
and jitter, writes one history row per attempt per target, and counts the run
once in the task's stats.

A task with an ``only_if`` check runs the check on each target first, with the
step's runner and within the step's timeout: a non-zero exit records that target
``skipped`` (with the check's output) and its step does not run. A skipped target
is neither a success nor a failure: it is never retried and not counted among the
servers that must succeed; a run whose every target skipped is ``skipped``.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from svrctl.commands import CommandResult, CommandRunner
from svrctl.db.engine import Database
from svrctl.db.models import RunStatus, Server, Task, TaskKind, TriggeredBy, utcnow
from svrctl.exceptions import NotFoundError, SvrctlError
from svrctl.execution.cancel import STEP_STOP_SECONDS, CancelToken
from svrctl.execution.history import (
    Outcome,
    begin_attempt,
    finish_attempt,
    record_final,
    update_stats,
)
from svrctl.settings import Settings
from svrctl.shellwords import build_command
from svrctl.ssh.target import SecretResolver

__all__ = [
    "RunRequest",
    "TaskExecutionResult",
    "backoff_delay",
    "execute_task",
    "misfire",
    "record_missed",
]

MAX_PARALLEL = 10
MAX_BACKOFF_SECONDS = 3600.0
# How long past its own deadline a stuck step may hold a run before it is abandoned.
WATCHDOG_GRACE_SECONDS = 5.0

# Called with (server, stream, line) for each line of live output.
LiveOutput = Callable[[str, str, str], None]

# Outcomes a target is not retried after: it did its work, or its check said not to.
_NOT_RETRIED = {RunStatus.SUCCESS, RunStatus.SKIPPED}
# How much of an --only-if command an error message quotes.
CHECK_QUOTE_CHARS = 200


class TaskExecutionResult(BaseModel):
    """The result of one run of a task (the seed's TaskExecutionResult, extended)."""

    task_id: int
    success: bool
    output: str
    error: str | None = None
    duration_ms: int
    exit_code: int | None = None
    status: str
    task_name: str = ""
    attempts: int = 0
    history_ids: list[int] = Field(default_factory=list)
    # a plugin run's figures (each with its "server") and whether it asks to notify
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    notify: bool = False
    priority: int | None = None


@dataclass
class RunRequest:
    """Who asks for a run, and how."""

    task_id: int
    force: bool = False
    triggered_by: TriggeredBy = TriggeredBy.MANUAL
    flow_run_id: str | None = None
    scheduled_at: datetime | None = None
    log: logging.Logger | logging.LoggerAdapter[Any] = field(
        default_factory=lambda: logging.getLogger("svrctl.executor")
    )
    on_line: LiveOutput | None = None
    secrets: SecretResolver | None = None
    sleep: Callable[[float], None] = time.sleep
    # Set when the run can be cancelled from outside (see svrctl.execution.cancel).
    cancel: CancelToken | None = None


@dataclass
class _Target:
    """One place the step runs: a server name (or the local host) and how to run there."""

    name: str
    make_runner: Callable[[], CommandRunner]
    # The server's Prefect global concurrency limit, when it has max_concurrent set.
    limit: str | None = None


def backoff_delay(base: float, attempt: int, rng: random.Random | None = None) -> float:
    """Return the wait before retry ``attempt`` (1 = first retry).

    That is base * 2^(n-1) with ±20 % jitter, and never more than MAX_BACKOFF_SECONDS.
    """
    if base <= 0:
        return 0.0
    raw = min(base * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    jitter: float = (rng or random).uniform(0.8, 1.2)
    return min(raw * jitter, MAX_BACKOFF_SECONDS)


def execute_task(db: Database, settings: Settings, request: RunRequest) -> TaskExecutionResult:
    """Run a task once (with its retries) and record it all; a failed step never raises."""
    started = time.monotonic()
    log = request.log
    with db.read() as session:
        task = session.get(Task, request.task_id)
        if task is None:
            raise NotFoundError(
                f"no task with id {request.task_id}: it may have been removed "
                "(see `svrctl task list`)",
                field="task_id",
            )
        server = session.get(Server, task.server_id) if task.server_id else None
    log.info("Starting execution of task %s", task.name)

    def finish(status: RunStatus, error: str, history_ids: list[int]) -> TaskExecutionResult:
        elapsed_ms = int((time.monotonic() - started) * 1000)
        return _not_run(task, status, error, history_ids, elapsed_ms)

    trigger = request.triggered_by.value
    if not task.enabled and not request.force:
        error = (
            f"task {task.name} is disabled: enable it (`svrctl task enable {task.name}`) "
            "or run it with force"
        )
        row = record_final(
            db,
            task.id,
            status=RunStatus.CANCELLED,
            error=error,
            triggered_by=trigger,
            flow_run_id=request.flow_run_id,
        )
        log.warning("Task %s refused: %s", task.name, error)
        return finish(RunStatus.CANCELLED, error, [row])

    stale = _misfire(task, request)
    if stale is not None:
        return _missed(db, task, request, stale, finish)

    targets = _targets(db, settings, task, server, request)
    if isinstance(targets, str):
        row = record_final(
            db,
            task.id,
            status=RunStatus.FAILED,
            error=targets,
            triggered_by=trigger,
            flow_run_id=request.flow_run_id,
        )
        return _counted(db, task, finish(RunStatus.FAILED, targets, [row]))

    pending = targets
    results: dict[str, Outcome] = {}
    history_ids: list[int] = []
    attempt = 0
    while pending:
        attempt += 1
        ids = begin_attempt(
            db,
            task.id,
            servers=[t.name for t in pending],
            attempt=attempt,
            triggered_by=trigger if attempt == 1 else TriggeredBy.RETRY.value,
            flow_run_id=request.flow_run_id,
            skip_if_running=attempt == 1 and task.overlap_policy == "skip" and not request.force,
        )
        if isinstance(ids, str):
            return _missed(db, task, request, ids, finish)
        history_ids += ids
        outcomes = _run_attempt(db, task, pending, ids, request)
        results.update(outcomes)
        failed = [t for t in pending if outcomes[t.name].status not in _NOT_RETRIED]
        if not failed or attempt > task.retries or _cancelled(request):
            break
        delay = backoff_delay(task.retry_delay_seconds, attempt)
        log.warning(
            "Task %s attempt %d failed on %s; retrying in %.1f s",
            task.name,
            attempt,
            ", ".join(t.name for t in failed),
            delay,
        )
        if request.cancel is not None:
            request.cancel.wait(delay)  # a cancellation ends the wait (and the run)
        else:
            request.sleep(delay)
        pending = failed

    result = _summarise(task, targets, results, attempt, history_ids, started)
    _plugin_findings(result, targets, results)
    cancelled = [o for o in results.values() if o.status is RunStatus.CANCELLED]
    if cancelled:
        result.success = False
        result.status = RunStatus.CANCELLED.value
        result.error = cancelled[0].error
    if result.success:
        log.info("Task %s completed successfully in %dms", task.name, result.duration_ms)
    elif result.status == RunStatus.SKIPPED.value:
        log.info("Task %s skipped: %s", task.name, _skip_reason(result.error, first=False))
    elif cancelled:
        log.warning("Task %s was %s, after %dms", task.name, result.error, result.duration_ms)
    else:
        log.error("Task %s failed after %dms: %s", task.name, result.duration_ms, result.error)
    return _counted(db, task, result)


def misfire(db: Database, request: RunRequest, at: datetime | None = None) -> str | None:
    """Return why a scheduled run must not run (later than its task's misfire grace), or None.

    ``at`` is when the run got its turn (default now). None too when the task is
    gone or disabled: such a run reports that itself.
    """
    with db.read() as session:
        task = session.get(Task, request.task_id)
    if task is None or (not task.enabled and not request.force):
        return None
    return _misfire(task, request, at)


def record_missed(db: Database, request: RunRequest, error: str) -> TaskExecutionResult:
    """Record a run that did not run as one final ``missed`` row, counted once in the stats."""
    with db.read() as session:
        task = session.get(Task, request.task_id)
    if task is None:
        raise NotFoundError(f"no task with id {request.task_id}", field="task_id")
    return _missed(db, task, request, error, functools.partial(_not_run, task))


def _not_run(
    task: Task, status: RunStatus, error: str, history_ids: list[int], duration_ms: int = 0
) -> TaskExecutionResult:
    """Return the result of a run that ended before its step ran (refused, missed, failed)."""
    return TaskExecutionResult(
        task_id=task.id,
        task_name=task.name,
        success=False,
        output="",
        error=error,
        duration_ms=duration_ms,
        status=status.value,
        history_ids=history_ids,
    )


def _misfire(task: Task, request: RunRequest, at: datetime | None = None) -> str | None:
    """Return the ``missed`` message of a scheduled run later than the misfire grace, or None."""
    if request.triggered_by is not TriggeredBy.SCHEDULE or request.scheduled_at is None:
        return None
    late = (at or utcnow()) - request.scheduled_at
    if late <= timedelta(seconds=task.misfire_grace_seconds):
        return None
    return (
        f"missed: this scheduled run was due at {request.scheduled_at:%Y-%m-%d %H:%M:%S} "
        f"UTC and started {late.total_seconds():.0f} s late, more than the task's "
        f"misfire grace of {task.misfire_grace_seconds} s"
    )


def _missed(
    db: Database,
    task: Task,
    request: RunRequest,
    error: str,
    finish: Callable[[RunStatus, str, list[int]], TaskExecutionResult],
) -> TaskExecutionResult:
    row = record_final(
        db,
        task.id,
        status=RunStatus.MISSED,
        error=error,
        triggered_by=request.triggered_by.value,
        flow_run_id=request.flow_run_id,
    )
    request.log.warning("Task %s %s", task.name, error)
    return _counted(db, task, finish(RunStatus.MISSED, error, [row]))


def _counted(db: Database, task: Task, result: TaskExecutionResult) -> TaskExecutionResult:
    """Count the finished run in the task's stats and return the result."""
    update_stats(
        db,
        task.id,
        status=RunStatus(result.status),
        finished_at=utcnow(),
        duration_ms=result.duration_ms,
    )
    return result


def _targets(
    db: Database, settings: Settings, task: Task, server: Server | None, request: RunRequest
) -> list[_Target] | str:
    """Return where the step runs, or why it cannot run anywhere."""
    from svrctl.local import LocalRunner, local_host_name

    limit = settings.output_limit_bytes
    if task.kind == TaskKind.LOCAL.value or (task.kind == TaskKind.PLUGIN.value and server is None):
        name = local_host_name()
        cancel = request.cancel

        def make_local() -> CommandRunner:
            runner: CommandRunner = LocalRunner(output_limit=limit, name=name)
            if cancel is not None:
                from svrctl.execution.stopping import StoppableLocalRunner

                runner = StoppableLocalRunner(runner, cancel)
            return runner

        return [_Target(name, make_local)]
    from svrctl.sync import server_limit_name

    with db.read() as session:
        if task.server_tag:
            from svrctl.servers import servers_with_tag

            servers = servers_with_tag(session, task.server_tag, enabled_only=True)
            if not servers:
                return f"no enabled server has the tag {task.server_tag!r}"
        elif server is None:
            return f"task {task.name} has no target server"
        else:
            servers = [server]
        targets = []
        for row in servers:
            targets.append(
                _Target(
                    row.name,
                    _ssh_runner_factory(session, row, settings, task, request),
                    server_limit_name(row.name) if row.max_concurrent else None,
                )
            )
    return targets


def _ssh_runner_factory(
    session: Any, server: Server, settings: Settings, task: Task, request: RunRequest
) -> Callable[[], CommandRunner]:
    """Capture what an SSH runner needs; secrets are read when the step starts."""
    from svrctl.ssh.target import target_for_server

    try:
        target = target_for_server(session, server, settings, request.secrets)
    except SvrctlError as exc:
        failure = exc

        def broken() -> CommandRunner:
            raise failure

        return broken

    def make() -> CommandRunner:
        from svrctl.ssh.pool import default_pool
        from svrctl.ssh.runner import SshRunner

        default_pool.idle_seconds = settings.ssh_idle_seconds
        pool = default_pool
        if request.cancel is not None:
            from svrctl.execution.stopping import StoppablePool

            pool = StoppablePool(default_pool, request.cancel)
        return SshRunner(target, output_limit=settings.output_limit_bytes, pty=task.pty, pool=pool)

    return make


def _run_attempt(
    db: Database,
    task: Task,
    targets: list[_Target],
    row_ids: list[int],
    request: RunRequest,
) -> dict[str, Outcome]:
    """Run the step on every target at once (bounded); finish each row whatever happens."""

    def one(target: _Target, row_id: int) -> Outcome:
        outcome = Outcome(RunStatus.CRASHED, error="the step ended without a result")
        try:
            if request.cancel is not None and request.cancel.cancelled:
                outcome = _cancelled_outcome(request.cancel, None)
            else:
                outcome = _with_deadline(
                    lambda: _step(task, target, request), task.timeout_seconds, request.cancel
                )
        except Exception as exc:  # a bug or an unexpected library error: record it
            outcome = Outcome(RunStatus.FAILED, error=f"{exc.__class__.__name__}: {exc}")
        finally:
            finish_attempt(db, row_id, outcome)
        if outcome.metrics:
            _record_metrics(db, task, target.name, outcome, request)
        return outcome

    if len(targets) == 1:
        return {targets[0].name: one(targets[0], row_ids[0])}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(targets))) as pool:
        outcomes = list(pool.map(one, targets, row_ids))
    return {t.name: o for t, o in zip(targets, outcomes, strict=True)}


def _record_metrics(
    db: Database, task: Task, server: str, outcome: Outcome, request: RunRequest
) -> None:
    """Store a plugin step's figures; a failure to store them never fails the run."""
    from svrctl.metrics import record_metrics

    try:
        record_metrics(
            db,
            server=server,
            plugin=task.plugin or "",
            metrics=outcome.metrics,
            task_id=task.id,
            flow_run_id=request.flow_run_id,
        )
    except Exception as exc:
        request.log.warning("Could not store the metrics of %s on %s: %s", task.name, server, exc)


def _with_deadline(
    step: Callable[[], Outcome], timeout: int, cancel: CancelToken | None = None
) -> Outcome:
    """Run ``step`` in a thread; give up on it shortly after its own deadline.

    When ``cancel`` is cancelled meanwhile, the step's stoppers (registered by the
    runners' wrappers) stop what it started; the outcome is ``cancelled``, with the
    output the step got, and a step that does not return within STEP_STOP_SECONDS
    is abandoned.
    """
    box: dict[str, Any] = {}
    done = threading.Event()
    wake = threading.Event()  # the step returned, or the run was cancelled

    def target() -> None:
        try:
            box["outcome"] = step()
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()
            wake.set()

    forget = cancel.on_cancel(wake.set) if cancel is not None else None
    started = time.monotonic()
    thread = threading.Thread(target=target, name="svrctl-step", daemon=True)
    thread.start()
    try:
        wake.wait(timeout + WATCHDOG_GRACE_SECONDS)
        if cancel is not None and cancel.cancelled:
            done.wait(STEP_STOP_SECONDS)
            finished: Outcome | None = box.get("outcome")
            if finished is None or finished.status is not RunStatus.SUCCESS:
                elapsed_ms = int((time.monotonic() - started) * 1000)
                return _cancelled_outcome(cancel, finished, elapsed_ms)
    finally:
        if forget is not None:
            forget()
    if not done.is_set():
        return Outcome(
            RunStatus.TIMED_OUT,
            error=f"the step was still blocked {timeout + WATCHDOG_GRACE_SECONDS:g} s after "
            f"it started (timeout {timeout} s); it was abandoned",
            duration_ms=int((timeout + WATCHDOG_GRACE_SECONDS) * 1000),
        )
    if "error" in box:
        raise box["error"]
    outcome: Outcome = box["outcome"]
    return outcome


def _cancelled(request: RunRequest) -> bool:
    return request.cancel is not None and request.cancel.cancelled


def _cancelled_outcome(
    cancel: CancelToken, finished: Outcome | None, duration_ms: int = 0
) -> Outcome:
    """Return the outcome of a step stopped by cancellation, keeping what it printed."""
    error = f"cancelled: {cancel.reason or 'the run was cancelled'}"
    if finished is None:
        return Outcome(RunStatus.CANCELLED, error=error, duration_ms=duration_ms)
    return Outcome(
        RunStatus.CANCELLED,
        output=finished.output,
        output_truncated=finished.output_truncated,
        output_bytes=finished.output_bytes,
        error=error,
        duration_ms=finished.duration_ms or duration_ms,
    )


def _step(
    task: Task, target: _Target, request: RunRequest, timeout: float | None = None
) -> Outcome:
    """Run the task's step on one target and turn the result into an outcome.

    On a server with a limit of concurrent runs, and with a Prefect API in use, the
    step first takes a slot of the server's global concurrency limit (see
    :func:`_step_in_server_slot`); ``timeout`` is then what is left of the task's.
    """
    if timeout is None and target.limit is not None and _prefect_api_in_use():
        return _step_in_server_slot(task, target, request)
    timeout = task.timeout_seconds if timeout is None else timeout
    runner = target.make_runner()
    checked_ms = 0
    if task.only_if:
        check_started = time.monotonic()
        verdict = _check(task.only_if, target, runner, request, timeout)
        if verdict is not None:
            return verdict
        checked_ms = int((time.monotonic() - check_started) * 1000)
        if request.cancel is not None and request.cancel.cancelled:
            return _cancelled_outcome(request.cancel, None, checked_ms)
        timeout -= time.monotonic() - check_started
        if timeout <= 0:
            return Outcome(
                RunStatus.TIMED_OUT,
                error=f"the check `{_quote(task.only_if)}` passed on {target.name} but used "
                f"the task's whole timeout ({task.timeout_seconds} s); the step did not run",
                duration_ms=checked_ms,
            )
    outcome = _run_step(task, target, runner, request, timeout)
    outcome.duration_ms += checked_ms
    return outcome


def _run_step(
    task: Task, target: _Target, runner: CommandRunner, request: RunRequest, timeout: float
) -> Outcome:
    """Run the step itself (command or plugin) with ``runner``."""
    on_line = None
    if request.on_line is not None:
        live = request.on_line

        def on_line(stream: str, line: str) -> None:
            live(target.name, stream, line)

    if task.kind == TaskKind.PLUGIN.value:
        return _plugin_step(task, runner, request, timeout)
    command = build_command(task.command or "", task.args)
    request.log.info("Executing command on %s: %s", target.name, command)
    result = runner.run(command, timeout=timeout, on_line=on_line)
    return _outcome(result)


def _check(
    check: str, target: _Target, runner: CommandRunner, request: RunRequest, timeout: float
) -> Outcome | None:
    """Run the task's ``only_if`` check; None when it passed, else the target's outcome.

    A non-zero exit is ``skipped`` (with the check's output); a check that could not
    run (no connection, timeout, killed) is a failure of the run, never a skip.
    """
    request.log.info("Checking condition on %s: %s", target.name, check)
    result = runner.run(check, timeout=timeout)
    if result.success:
        return None
    quoted = _quote(check)
    if result.timed_out:
        status = RunStatus.TIMED_OUT
        reason = f"the check `{quoted}` failed to run on {target.name}: {result.error_text}"
    elif result.error is not None or result.exit_code is None:
        status = RunStatus.FAILED
        why = result.error_text or "it ended without an exit code"
        reason = f"the check `{quoted}` failed to run on {target.name}: {why}"
    else:
        status = RunStatus.SKIPPED
        reason = f"skipped: the check `{quoted}` exited {result.exit_code} on {target.name}"
    return _from_command(result, status, reason)


def _quote(command: str) -> str:
    """Return a command as an error message quotes it: one line, not too long."""
    text = " ".join(command.split())
    if len(text) > CHECK_QUOTE_CHARS:
        text = text[: CHECK_QUOTE_CHARS - 1] + "…"
    return text


def _prefect_api_in_use() -> bool:
    """Tell whether this run talks to a Prefect API (not a bare executor, not ephemeral)."""
    import sys

    if "prefect" not in sys.modules:
        return False
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def _step_in_server_slot(task: Task, target: _Target, request: RunRequest) -> Outcome:
    """Run the step holding one slot of the server's global concurrency limit.

    The limit (``svrctl-server-NAME``, created by ``svrctl sync``) is used strictly: a
    missing limit fails the step rather than running it unguarded. Waiting for a
    slot counts against the task's timeout, so the step's watchdog still holds.
    Runs in the step's own thread: Prefect's sync ``concurrency`` runs its requests
    on Prefect's loop thread and renews the 60 s lease from a daemon thread; a failed
    renewal only warns (cancelling would inject an exception into this thread).
    """
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    assert target.limit is not None
    started = time.monotonic()
    try:
        with concurrency(
            target.limit,
            timeout_seconds=task.timeout_seconds,
            strict=True,
            lease_duration=60,
            raise_on_lease_renewal_failure=False,
        ):
            if _cancelled(request):
                assert request.cancel is not None
                return _cancelled_outcome(request.cancel, None)
            left = task.timeout_seconds - (time.monotonic() - started)
            if left < 1:
                raise TimeoutError
            return _step(task, target, request, left)
    except TimeoutError:
        return Outcome(
            RunStatus.TIMED_OUT,
            error=f"{target.name} was busy with other runs for the task's whole timeout "
            f"({task.timeout_seconds} s): it allows only a limited number of runs at once "
            f"(Prefect global concurrency limit {target.limit})",
            duration_ms=int((time.monotonic() - started) * 1000),
        )
    except ConcurrencySlotAcquisitionError as exc:
        return Outcome(
            RunStatus.FAILED,
            error=f"{target.name} allows only a limited number of runs at once, but Prefect "
            f"has no usable global concurrency limit {target.limit} ({exc}): run `svrctl sync`",
        )


def _outcome(result: CommandResult) -> Outcome:
    if result.success:
        status = RunStatus.SUCCESS
    elif result.timed_out:
        status = RunStatus.TIMED_OUT
    else:
        status = RunStatus.FAILED
    return _from_command(result, status, result.error_text if not result.success else None)


def _from_command(result: CommandResult, status: RunStatus, reason: str | None) -> Outcome:
    """Turn a command's result into an outcome; the error is ``reason`` then its stderr."""
    parts = [p for p in (reason, result.stderr.rstrip("\n")) if p]
    return Outcome(
        status=status,
        exit_code=result.exit_code,
        output=result.stdout,
        output_truncated=result.stdout_truncated,
        output_bytes=result.stdout_bytes,
        error="\n".join(parts) or None,
        error_truncated=result.stderr_truncated,
        error_bytes=result.stderr_bytes,
        duration_ms=result.duration_ms,
    )


def _plugin_step(task: Task, runner: CommandRunner, request: RunRequest, timeout: float) -> Outcome:
    from svrctl.plugin import PluginContext, action_of, get_plugin, validate_config

    started = time.monotonic()
    plugin = get_plugin(task.plugin or "")
    config = validate_config(plugin, task.plugin_config)
    action = action_of(plugin, config)
    request.log.info("Running plugin %s (%s) on %s", plugin.name, action, runner.name)
    ctx = PluginContext(runner=runner, timeout=float(timeout), action=action, log=request.log)
    try:
        found = plugin().run(ctx, config)
    finally:
        ctx.close()
    details = f"{found.summary}\n\n{found.details}".strip()
    return Outcome(
        status=RunStatus.SUCCESS if found.success else RunStatus.FAILED,
        output=details,
        output_bytes=len(details.encode()),
        error=None if found.success else found.summary,
        duration_ms=int((time.monotonic() - started) * 1000),
        metrics=list(found.metrics),
        notify=found.notify,
        priority=found.priority if found.notify else None,
    )


def _plugin_findings(
    result: TaskExecutionResult, targets: list[_Target], results: dict[str, Outcome]
) -> None:
    """Put each target's plugin figures and notification wish into the run's result."""
    for t in targets:
        outcome = results[t.name]
        result.metrics += [{"server": t.name, **m.model_dump(mode="json")} for m in outcome.metrics]
        if outcome.notify:
            result.notify = True
            result.priority = max(result.priority or 0, outcome.priority or 0) or None


def _summarise(
    task: Task,
    targets: list[_Target],
    results: dict[str, Outcome],
    attempts: int,
    history_ids: list[int],
    started: float,
) -> TaskExecutionResult:
    """Combine per-target outcomes into the run's result."""
    duration_ms = int((time.monotonic() - started) * 1000)
    ok = [t.name for t in targets if results[t.name].status is RunStatus.SUCCESS]
    skipped = [t.name for t in targets if results[t.name].status is RunStatus.SKIPPED]
    # a skipped target neither succeeded nor failed: it is not among those needed
    needed = task.min_success if task.min_success is not None else len(targets) - len(skipped)
    success = len(ok) >= needed and len(skipped) < len(targets)
    failed = [t.name for t in targets if t.name not in ok and t.name not in skipped]
    if len(targets) == 1:
        only = results[targets[0].name]
        status = only.status
        return TaskExecutionResult(
            task_id=task.id,
            task_name=task.name,
            success=success,
            output=only.output,
            error=only.error if not success else None,
            duration_ms=duration_ms,
            exit_code=only.exit_code,
            status=status.value,
            attempts=attempts,
            history_ids=history_ids,
        )
    sections = []
    for t in targets:
        o = results[t.name]
        sections.append(f"== {t.name}: {o.status.value} ==\n{o.output}".rstrip())
    if success:
        status = RunStatus.SUCCESS
        error = None
    elif len(skipped) == len(targets):
        status = RunStatus.SKIPPED
        first = "; ".join(f"{n}: {_skip_reason(results[n].error)}" for n in skipped)
        error = f"skipped on all {len(targets)} servers: {first}"
    elif not failed:
        # some skipped, the rest succeeded, but fewer than min_success
        status = RunStatus.FAILED
        error = (
            f"{len(ok)} of {len(targets)} servers succeeded and {len(skipped)} skipped "
            f"({needed} needed to succeed): "
            + "; ".join(f"{n}: {_skip_reason(results[n].error)}" for n in skipped)
        )
    else:
        all_timeouts = all(results[n].status is RunStatus.TIMED_OUT for n in failed)
        status = RunStatus.TIMED_OUT if all_timeouts else RunStatus.FAILED
        first = "; ".join(f"{n}: {_first_line(results[n].error)}" for n in failed)
        also = f", {len(skipped)} skipped" if skipped else ""
        error = (
            f"{len(failed)} of {len(targets)} servers failed "
            f"({needed} needed to succeed{also}): {first}"
        )
    codes = {results[t.name].exit_code for t in targets}
    return TaskExecutionResult(
        task_id=task.id,
        task_name=task.name,
        success=success,
        output="\n".join(sections),
        error=error,
        duration_ms=duration_ms,
        exit_code=codes.pop() if len(codes) == 1 else None,
        status=status.value,
        attempts=attempts,
        history_ids=history_ids,
    )


def _first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "failed")


def _skip_reason(text: str | None, *, first: bool = True) -> str:
    """Return a skip message without its leading "skipped" (only its first line if ``first``)."""
    reason = _first_line(text) if first else (text or "")
    return reason.removeprefix("skipped: ").removeprefix("skipped ")
