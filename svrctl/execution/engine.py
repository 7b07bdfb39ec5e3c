"""Execute one run of a task: the seed's ``execute_task``, independent of Prefect.

A run loads its task, refuses a disabled one (unless forced), drops a stale
scheduled run as ``missed``, honours the overlap policy, runs its step on every
target with the task's timeout, retries failed targets with exponential backoff
and jitter, writes one history row per attempt per target, and counts the run
once in the task's stats.
"""

from __future__ import annotations

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

__all__ = ["RunRequest", "TaskExecutionResult", "backoff_delay", "execute_task"]

MAX_PARALLEL = 10
MAX_BACKOFF_SECONDS = 3600.0
# How long past its own deadline a stuck step may hold a run before it is abandoned.
WATCHDOG_GRACE_SECONDS = 5.0

# Called with (server, stream, line) for each line of live output.
LiveOutput = Callable[[str, str, str], None]


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


@dataclass
class _Target:
    """One place the step runs: a server name (or the local host) and how to run there."""

    name: str
    make_runner: Callable[[], CommandRunner]


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
        return TaskExecutionResult(
            task_id=task.id,
            task_name=task.name,
            success=False,
            output="",
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            status=status.value,
            history_ids=history_ids,
        )

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

    if request.triggered_by is TriggeredBy.SCHEDULE and request.scheduled_at is not None:
        late = utcnow() - request.scheduled_at
        if late > timedelta(seconds=task.misfire_grace_seconds):
            error = (
                f"missed: this scheduled run was due at {request.scheduled_at:%Y-%m-%d %H:%M:%S} "
                f"UTC and started {late.total_seconds():.0f} s late, more than the task's "
                f"misfire grace of {task.misfire_grace_seconds} s"
            )
            return _missed(db, task, request, error, finish)

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
        failed = [t for t in pending if outcomes[t.name].status is not RunStatus.SUCCESS]
        if not failed or attempt > task.retries:
            break
        delay = backoff_delay(task.retry_delay_seconds, attempt)
        log.warning(
            "Task %s attempt %d failed on %s; retrying in %.1f s",
            task.name,
            attempt,
            ", ".join(t.name for t in failed),
            delay,
        )
        request.sleep(delay)
        pending = failed

    result = _summarise(task, targets, results, attempt, history_ids, started)
    if result.success:
        log.info("Task %s completed successfully in %dms", task.name, result.duration_ms)
    else:
        log.error("Task %s failed after %dms: %s", task.name, result.duration_ms, result.error)
    return _counted(db, task, result)


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
        return [_Target(name, lambda: LocalRunner(output_limit=limit, name=name))]
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
                _Target(row.name, _ssh_runner_factory(session, row, settings, task, request))
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
        return SshRunner(target, output_limit=settings.output_limit_bytes, pty=task.pty)

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
            outcome = _with_deadline(lambda: _step(task, target, request), task.timeout_seconds)
        except Exception as exc:  # a bug or an unexpected library error: record it
            outcome = Outcome(RunStatus.FAILED, error=f"{exc.__class__.__name__}: {exc}")
        finally:
            finish_attempt(db, row_id, outcome)
        return outcome

    if len(targets) == 1:
        return {targets[0].name: one(targets[0], row_ids[0])}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(targets))) as pool:
        outcomes = list(pool.map(one, targets, row_ids))
    return {t.name: o for t, o in zip(targets, outcomes, strict=True)}


def _with_deadline(step: Callable[[], Outcome], timeout: int) -> Outcome:
    """Run ``step`` in a thread; give up on it shortly after its own deadline."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["outcome"] = step()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="svrctl-step", daemon=True)
    thread.start()
    thread.join(timeout + WATCHDOG_GRACE_SECONDS)
    if thread.is_alive():
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


def _step(task: Task, target: _Target, request: RunRequest) -> Outcome:
    """Run the task's step on one target and turn the result into an outcome."""
    runner = target.make_runner()
    on_line = None
    if request.on_line is not None:
        live = request.on_line

        def on_line(stream: str, line: str) -> None:
            live(target.name, stream, line)

    if task.kind == TaskKind.PLUGIN.value:
        return _plugin_step(task, runner, request)
    command = build_command(task.command or "", task.args)
    request.log.info("Executing command on %s: %s", target.name, command)
    result = runner.run(command, timeout=task.timeout_seconds, on_line=on_line)
    return _outcome(result)


def _outcome(result: CommandResult) -> Outcome:
    if result.success:
        status = RunStatus.SUCCESS
    elif result.timed_out:
        status = RunStatus.TIMED_OUT
    else:
        status = RunStatus.FAILED
    reason = result.error_text if not result.success else None
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


def _plugin_step(task: Task, runner: CommandRunner, request: RunRequest) -> Outcome:
    from svrctl.plugin import PluginContext, get_plugin, validate_config

    started = time.monotonic()
    plugin = get_plugin(task.plugin or "")
    config = validate_config(plugin, task.plugin_config)
    request.log.info("Running plugin %s on %s", plugin.name, runner.name)
    ctx = PluginContext(
        runner=runner, timeout=float(task.timeout_seconds), action=plugin.actions[0]
    )
    found = plugin().run(ctx, config)
    details = f"{found.summary}\n\n{found.details}".strip()
    return Outcome(
        status=RunStatus.SUCCESS if found.success else RunStatus.FAILED,
        output=details,
        output_bytes=len(details.encode()),
        error=None if found.success else found.summary,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


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
    needed = task.min_success if task.min_success is not None else len(targets)
    success = len(ok) >= needed
    failed = [t.name for t in targets if t.name not in ok]
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
    else:
        all_timeouts = all(results[n].status is RunStatus.TIMED_OUT for n in failed)
        status = RunStatus.TIMED_OUT if all_timeouts else RunStatus.FAILED
        first = "; ".join(f"{n}: {_first_line(results[n].error)}" for n in failed)
        error = (
            f"{len(failed)} of {len(targets)} servers failed ({needed} needed to succeed): {first}"
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
