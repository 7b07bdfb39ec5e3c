"""The ``svrctl`` work-pool worker type: flow runs in the worker's own process, started at once.

Prefect's stock ``process`` worker polls every 10 s and starts a new Python
process for every flow run (seconds of imports): a Quick run takes 11-13 s to
finish. This worker type keeps each deployment's flow imported (cached by
entrypoint), polls every second, and runs each flow run in-process with
Prefect's flow engine, at most ``limit`` at a time. It is a real Prefect worker
type: installed with svrctl (entry point group ``prefect.collections``),
``prefect worker start --pool NAME --type svrctl`` runs it anywhere svrctl is
installed.

Cancellation: a flow run set to Cancelling is noticed through the worker's
cancellation observer (events, with a polling fallback); the worker cancels the
flow run's task, the run-task flow stops its step (the command on the server
and everything it started) and finishes its history rows as ``cancelled``, and
the engine reports the flow run Cancelled. Stopping the worker cancels its
in-flight runs the same way.

This module is imported wherever Prefect loads its collections (the Prefect
server too): it imports only Prefect's worker base at the top; svrctl's flows
and database are imported when a run needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from uuid import UUID

import anyio
import anyio.abc
import anyio.lowlevel
from prefect.flow_engine import AsyncFlowRunEngine
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)
from pydantic import Field, PrivateAttr
from pydantic.json_schema import SkipJsonSchema

from svrctl.execution.cancel import DEFAULT_CANCEL_GRACE_SECONDS, RunControl, run_control

if TYPE_CHECKING:
    from prefect._internal.observers import FlowRunCancellingObserver
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, State, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.flows import Flow
    from prefect.settings import Settings

    from svrctl.execution.engine import RunRequest, TaskExecutionResult

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_QUERY_SECONDS",
    "WORKER_TYPE",
    "SvrctlJobConfiguration",
    "SvrctlVariables",
    "SvrctlWorker",
    "SvrctlWorkerResult",
    "default_query_seconds",
    "ensure_work_pool",
    "run_worker",
    "start_worker",
]

WORKER_TYPE = "svrctl"
DEFAULT_LIMIT = 10
DEFAULT_QUERY_SECONDS = 1.0
# The flow this worker exists for, imported when the worker starts so the first run is fast.
RUN_TASK_ENTRYPOINT = "svrctl.flows.run_task:run_task"

# What the run-task flow's steps import on first use.
WARM_MODULES = (
    "svrctl.execution.stopping",
    "svrctl.ssh.runner",
    "svrctl.ssh.exec",
    "svrctl.local",
    "svrctl.plugin",
    "svrctl.servers",
    "svrctl.tasks",
    "prefect_shell",
)
# How long to wait before reconnecting to Prefect's events stream.
EVENTS_RETRY_SECONDS = 5.0
# How often runs are checked for cancellation while Prefect's events stream is down.
CANCELLATION_POLL_SECONDS = 5.0
# A prefetched run is claimed (proposed Pending) only this long before it is due.
# Pending takes the deployment's concurrency slot: claiming a run the whole prefetch
# window early would cancel (or queue) it while the run due before it still holds
# the slot. Claiming also sets the run up (several API calls, which a busy server
# may answer only after the client's retry back-off of a few seconds), and that
# must be done by its time: with 0.5 s or 2 s left, a third of the runs of
# benchmark 3 started 4-13 s late; with 5 s, none more than 1 s.
CLAIM_LEAD_SECONDS = 5.0
# While the Prefect API is unreachable (its server restarting), the worker tries its
# calls for a run it took again, after 1 s and then every 2 s, for at most this long:
# a run it claimed must not be left Pending, holding its slot. These calls are made
# with the Prefect client's own retries off: its back-off (2 s to 32 s) would keep a
# claimed run waiting up to half a minute after the API is back.
API_RETRY_SECONDS = 600.0
API_RETRY_MAX_DELAY = 2.0
# HTTP statuses that say the API is away or overloaded (the client's own retry codes).
API_AWAY_STATUSES = frozenset({408, 429, 502, 503, 504})
# Name of the Cancelled state of a scheduled run the worker recorded missed.
MISSED_STATE_NAME = "Missed"
# The worker checks a scheduled run against its task's misfire grace only when the run
# is more than this late; the run-task flow checks every run itself when it starts.
LATE_CHECK_SECONDS = 1.0
# How long past the notification timeout the notifications of a missed run may take.
NOTIFY_GRACE_SECONDS = 5.0
# What Prefect says of a run it cancelled because its deployment's slot was taken.
CONCURRENCY_CANCELLED = "Deployment concurrency limit reached."
# How far back (by due time) the worker looks for such runs, and how many at most.
CANCELLED_LOOKBACK = timedelta(hours=1)
CANCELLED_LOOKUP_LIMIT = 200
CANCELLED_IN_PREFECT = "the flow run was cancelled in Prefect"
WORKER_STOPPED = "the svrctl worker running it stopped"

log = logging.getLogger("svrctl.worker")
_HOSTNAME = socket.gethostname()
T = TypeVar("T")
# Prefect's settings in force, and a copy of them with the client's retries off (made
# when the worker starts: a copy takes a fifth of a second).
_retries_off: tuple[Settings, Settings] | None = None


class SvrctlJobConfiguration(BaseJobConfiguration):
    """How the svrctl worker runs one flow run (built from the work pool's base job template)."""

    # A flow run shares the worker's process: no command, environment or
    # infrastructure name of its own, so these base fields stay out of the form.
    command: SkipJsonSchema[str | None] = Field(default=None)
    env: SkipJsonSchema[dict[str, str | None]] = Field(default_factory=dict)
    labels: SkipJsonSchema[dict[str, str]] = Field(default_factory=dict)
    name: SkipJsonSchema[str | None] = Field(default=None)
    wait_for_scheduled_time: bool = Field(
        default=True,
        description=(
            "Start a scheduled run at its scheduled time, even when the worker picked it "
            "up early (the prefetch window)."
        ),
    )
    cancel_grace_seconds: float = Field(
        default=DEFAULT_CANCEL_GRACE_SECONDS,
        ge=0,
        description=(
            "How long a cancelled run may take to stop its command and record that it "
            "was cancelled, before the worker stops waiting for it."
        ),
    )

    _entrypoint: str | None = PrivateAttr(default=None)

    @property
    def entrypoint(self) -> str | None:
        """Return the deployment's entrypoint (``module.path:flow`` or ``file.py:flow``)."""
        return self._entrypoint

    @classmethod
    async def resolve_for_flow_run(
        cls,
        flow_run: FlowRun,
        *,
        client: PrefectClient,
        work_pool: WorkPool,
        worker_name: str,
        worker_id: UUID | None = None,
        deployment: DeploymentResponse | None = None,
    ) -> Self:
        """Build a claimed run's configuration, trying again while the API is unreachable."""
        resolve = super().resolve_for_flow_run
        return await _until_api_answers(
            lambda: resolve(
                flow_run,
                client=client,
                work_pool=work_pool,
                worker_name=worker_name,
                worker_id=worker_id,
                deployment=deployment,
            ),
            "read the flow run's deployment",
            log,
        )

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        """Prepare for a flow run and keep the deployment's entrypoint."""
        super().prepare_for_flow_run(
            flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id
        )
        self._entrypoint = deployment.entrypoint if deployment is not None else None


class SvrctlVariables(BaseVariables):
    """How the svrctl worker runs this pool's flow runs (the work pool's form)."""

    command: SkipJsonSchema[str | None] = Field(default=None)
    env: SkipJsonSchema[dict[str, str | None]] = Field(default_factory=dict)
    labels: SkipJsonSchema[dict[str, str]] = Field(default_factory=dict)
    name: SkipJsonSchema[str | None] = Field(default=None)
    wait_for_scheduled_time: bool = Field(
        default=True,
        title="Start on time",
        description=(
            "Start a scheduled run at its scheduled time, even when the worker picked it "
            "up early (the prefetch window). Turn off to start runs as soon as they are "
            "picked up."
        ),
    )
    cancel_grace_seconds: float = Field(
        default=DEFAULT_CANCEL_GRACE_SECONDS,
        ge=0,
        le=3600,
        title="Cancellation grace (seconds)",
        description=(
            "How long a cancelled run may take to stop its command (on the server and "
            "everything it started) and finish its history rows as cancelled, before "
            "the worker stops waiting for it."
        ),
    )


class SvrctlWorkerResult(BaseWorkerResult):
    """How a flow run ended in the worker: status code 0 when its state was reported."""


@dataclass
class _InProcessFlowRunEngine(AsyncFlowRunEngine[Any, Any]):
    """Prefect's async flow engine, reporting Cancelled when the worker cancels the run.

    Cancelling the run's task makes the engine see an asyncio cancellation. On its
    own it would report the run Crashed; here it runs the flow's on_cancellation
    hooks and reports Cancelled, with the reason as message (through Cancelling,
    unless Prefect already set that).
    """

    control: RunControl = field(default_factory=RunControl)

    async def handle_crash(self, exc: BaseException) -> None:
        """Report a cancellation of the run's task as Cancelled, anything else as a crash."""
        if not isinstance(exc, asyncio.CancelledError):
            await super().handle_crash(exc)
            return
        from prefect.states import Cancelled, Cancelling

        with anyio.CancelScope(shield=True):
            message = f"Cancelled: {self.control.reason or CANCELLED_IN_PREFECT}."
            self.logger.info(message)
            if self.control.reason == CANCELLED_IN_PREFECT:
                await self.call_hooks(Cancelling(message=message))
            else:
                await self.set_state(Cancelling(message=message), force=True)  # runs the hooks
            await self.set_state(Cancelled(message=message), force=True)
            self._raised = cast(Any, exc)
            self._telemetry.record_exception(exc)
            self._telemetry.end_span_on_failure(message)


@dataclass
class _Job:
    """One flow run running in this worker."""

    control: RunControl
    scope: anyio.CancelScope | None = None
    engine: _InProcessFlowRunEngine | None = None
    cancel_requested: bool = False

    def cancel(self, reason: str) -> None:
        """Stop the run: cancel its task; the flow stops its step and the engine reports it."""
        if self.cancel_requested:
            return
        self.cancel_requested = True
        self.control.reason = reason
        if self.scope is not None:
            self.scope.cancel()


class SvrctlWorker(BaseWorker[SvrctlJobConfiguration, SvrctlVariables, SvrctlWorkerResult]):
    """Runs flow runs inside the worker process, with the flow kept imported.

    Args:
        work_pool_name: The work pool to poll.
        work_queues: Work queues to poll; all of the pool's by default.
        name: The worker's name; a random one by default.
        prefetch_seconds: How far ahead to pick up scheduled runs. With
            ``wait_for_scheduled_time`` (the default) they still start on time.
        create_pool_if_not_found: Create the work pool (of type ``svrctl``) if missing.
        limit: Flow runs at once; default 10.
        heartbeat_interval_seconds: Seconds between the worker's heartbeats.
        base_job_template: The base job template of a work pool it creates.
        query_seconds: Seconds between polls; default PREFECT_WORKER_QUERY_SECONDS
            when that is set, else 1 s.
    """

    type = WORKER_TYPE
    job_configuration = SvrctlJobConfiguration
    job_configuration_variables = SvrctlVariables

    _description = (
        "Run flow runs inside the worker process, with the flow kept imported and a 1 s "
        "poll: a run starts within about a second. For svrctl's run-task flow; needs "
        "svrctl installed where the worker runs."
    )
    _display_name = "svrctl (in-process)"

    def __init__(
        self,
        work_pool_name: str,
        work_queues: list[str] | None = None,
        name: str | None = None,
        prefetch_seconds: float | None = None,
        create_pool_if_not_found: bool = True,
        limit: int | None = None,
        heartbeat_interval_seconds: int | None = None,
        *,
        base_job_template: dict[str, Any] | None = None,
        query_seconds: float | None = None,
    ) -> None:
        super().__init__(
            work_pool_name=work_pool_name,
            work_queues=work_queues,
            name=name,
            prefetch_seconds=prefetch_seconds,
            create_pool_if_not_found=create_pool_if_not_found,
            limit=limit if limit is not None else DEFAULT_LIMIT,
            heartbeat_interval_seconds=heartbeat_interval_seconds,
            base_job_template=base_job_template,
        )
        self.query_seconds = query_seconds if query_seconds is not None else default_query_seconds()
        self._jobs: dict[UUID, _Job] = {}
        self._flows: dict[str, Flow[Any, Any]] = {}
        self._flow_lock: asyncio.Lock | None = None
        self._claim_lock: asyncio.Lock | None = None
        self._entrypoints: dict[UUID, str | None] = {}
        self._sweeping: set[UUID] = set()
        self._run_observer: FlowRunCancellingObserver | None = None
        self._watch_scope = anyio.CancelScope()

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        run_once: bool = False,
        with_healthcheck: bool = False,
        printer: Callable[..., None] = print,
    ) -> None:
        """Run the worker's loops, polling every ``query_seconds``, until stopped."""
        from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

        # BaseWorker reads its poll interval from this setting when it starts.
        with temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: self.query_seconds}):
            await super().start(
                run_once=run_once, with_healthcheck=with_healthcheck, printer=printer
            )

    async def setup(self) -> None:
        """Set the worker up: observe cancellations, import the run-task flow, open the database.

        BaseWorker's own cancellation observer (off unless
        PREFECT_WORKER_ENABLE_CANCELLATION is set) only handles runs that are still
        pending; here the worker is what runs the flow runs, so it always watches
        its runs in progress for cancellation, through Prefect's events stream
        (with polling while the stream is down).
        """
        from prefect._internal.observers import FlowRunCancellingObserver
        from prefect.events.filters import EventFilter, EventNameFilter

        await super().setup()
        _hold_sigterm()
        self._exit_stack.callback(_release_sigterm)
        self._flow_lock = asyncio.Lock()
        self._run_observer = await self._exit_stack.enter_async_context(
            FlowRunCancellingObserver(
                on_cancelling=self._on_cancelling,
                polling_interval=CANCELLATION_POLL_SECONDS,
                event_filter=EventFilter(
                    event=EventNameFilter(name=["prefect.flow-run.Cancelling"])
                ),
            )
        )
        # Before the first poll, so that the first runs start on time too.
        await self._warm_up()
        if self._runs_task_group is not None:
            self._runs_task_group.start_soon(self._poll_on_new_runs)

    async def teardown(self, *exc_info: Any) -> None:
        """Cancel the runs still in progress (each stops its command), then tear down."""
        if self._jobs:
            grace = max(j.control.grace_seconds for j in self._jobs.values()) + 5.0
            self._logger.info("stopping %d flow run(s) in progress", len(self._jobs))
            for job in list(self._jobs.values()):
                job.cancel(WORKER_STOPPED)
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
                while self._jobs:
                    await anyio.sleep(0.05)
        self._watch_scope.cancel()
        await super().teardown(*exc_info)

    async def _warm_up(self) -> None:
        """Import svrctl's run-task flow and what its steps use, and open the app database.

        Otherwise the first run imports paramiko and the rest while it runs, holding
        Python's import lock, and runs starting at the same time wait for it.
        """
        _client_retries_off()  # makes its settings now rather than during a run
        try:
            await self._load_flow(RUN_TASK_ENTRYPOINT)

            def prepare() -> None:
                import importlib

                from svrctl.runtime import app_database

                for module in WARM_MODULES:
                    importlib.import_module(module)
                app_database()

            await anyio.to_thread.run_sync(prepare)
        except Exception as exc:  # runs will report it too; the worker still serves the pool
            self._logger.warning(
                "could not prepare svrctl's run-task flow (runs of it will fail until this "
                "is fixed): %s: %s",
                type(exc).__name__,
                exc,
            )

    async def _poll_on_new_runs(self) -> None:
        """Poll at once when Prefect announces a run scheduled in this pool.

        The regular poll (every ``query_seconds``) stays the safety net; this cuts
        the wait for it (half a second on average) from Quick runs. Announcements
        come from Prefect's events stream; while it is unavailable, only the
        regular poll runs.
        """
        wake = anyio.Event()

        async def watch() -> None:
            from prefect.events.clients import get_events_subscriber
            from prefect.events.filters import (
                EventAnyResourceFilter,
                EventFilter,
                EventNameFilter,
            )

            nonlocal wake
            while True:
                pool = self._work_pool
                if pool is not None:
                    scheduled = EventFilter(
                        event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
                        any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{pool.id}"]),
                    )
                    try:
                        async with get_events_subscriber(filter=scheduled) as subscriber:
                            async for _ in subscriber:
                                wake.set()
                    except Exception as exc:
                        self._logger.debug("events stream unavailable: %s", exc)
                await anyio.sleep(EVENTS_RETRY_SECONDS)

        async def poll() -> None:
            nonlocal wake
            while True:
                await wake.wait()
                wake = anyio.Event()  # announcements during this poll ask for another
                try:
                    await self.get_and_submit_flow_runs()
                except Exception as exc:  # the regular poll reports and backs off
                    self._logger.debug("poll on announcement failed: %s", exc)

        with self._watch_scope:
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                group.start_soon(poll)

    # ------------------------------------------------------------------ running

    async def run(
        self,
        flow_run: FlowRun,
        configuration: SvrctlJobConfiguration,
        task_status: anyio.abc.TaskStatus[Any] | None = None,
    ) -> SvrctlWorkerResult:
        """Run a flow run in this process and return when it is over.

        The identifier reported to Prefect (the flow run's ``infrastructure_pid``)
        is ``HOST:PID:FLOW_RUN_ID``.
        """
        identifier = f"{_HOSTNAME}:{os.getpid()}:{flow_run.id}"
        flow = await self._load_flow(configuration.entrypoint)
        if not flow.isasync or flow.isgenerator:
            raise TypeError(
                f"flow {flow.name!r} is not an async function: the svrctl worker runs async "
                "flows in its own process (use a process work pool for other flows)"
            )
        # Any cancellation that is not a cancel request from Prefect is the worker stopping.
        control = RunControl(configuration.cancel_grace_seconds, reason=WORKER_STOPPED)
        job = _Job(control)
        self._jobs[flow_run.id] = job
        if self._run_observer is not None:
            self._run_observer.add_in_flight_flow_run_id(flow_run.id)
        try:
            if task_status is not None:
                task_status.started(identifier)
            code = await self._run_job(flow, flow_run, configuration, job)
        finally:
            self._jobs.pop(flow_run.id, None)
            if self._run_observer is not None:
                self._run_observer.remove_in_flight_flow_run_id(flow_run.id)
        return SvrctlWorkerResult(identifier=identifier, status_code=code)

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        """Claim a prefetched run only when it is nearly due, then as Prefect's worker does.

        While it waits the run stays Scheduled (it can still be cancelled or
        deleted in Prefect), and this worker does not fetch it twice. A scheduled
        run already later than its task's misfire grace is not claimed: it is
        recorded missed (see ``_record_if_missed``).
        """
        when = _scheduled_time(flow_run)
        if when is not None:
            await _sleep_until(when - timedelta(seconds=CLAIM_LEAD_SECONDS))
        if self._claim_lock is None:
            self._claim_lock = asyncio.Lock()
        # One claim at a time: claims of runs due together contend for the server's
        # database otherwise.
        async with self._claim_lock:
            if await self._record_if_missed(flow_run, None):
                return False
            return await self._claim(flow_run)

    async def _claim(self, flow_run: FlowRun) -> bool:
        """Propose Pending as Prefect's worker does, trying again while the API is unreachable.

        A claim whose answer was lost (the server went away during the request)
        may have been made: when Prefect then refuses another Pending, the run is
        this worker's if it has been Pending since the first try.
        """
        from prefect.exceptions import Abort
        from prefect.states import Pending
        from prefect.utilities.engine import propose_state

        run_logger = self.get_flow_run_logger(flow_run)
        since = datetime.now(UTC)
        tries = 0

        async def propose() -> State[Any]:
            nonlocal tries
            tries += 1
            return await propose_state(self.client, Pending(), flow_run_id=flow_run.id)

        try:
            state = await _until_api_answers(propose, f"claim flow run '{flow_run.id}'", run_logger)
        except Abort as exc:
            if tries > 1 and await self._pending_since(flow_run, since):
                return True
            run_logger.info(
                "Aborted submission of flow run '%s'. Server sent an abort signal: %s",
                flow_run.id,
                exc,
            )
            return False
        except Exception:
            run_logger.exception("Failed to update state of flow run '%s'", flow_run.id)
            return False
        if not state.is_pending():
            run_logger.info(
                "Aborted submission of flow run '%s': Server returned a non-pending state %r",
                flow_run.id,
                state.type.value,
            )
            return False
        return True

    async def _pending_since(self, flow_run: FlowRun, since: datetime) -> bool:
        """Tell whether the run has been Pending (claimed, not started) since ``since``."""
        try:
            current = await _until_api_answers(
                lambda: self.client.read_flow_run(flow_run.id), "read the flow run", self._logger
            )
        except Exception:
            return False
        state = current.state
        return (
            state is not None
            and state.is_pending()
            and state.name == "Pending"
            and state.timestamp >= since
        )

    async def _record_if_missed(self, flow_run: FlowRun, entrypoint: str | None) -> bool:
        """Record a stale scheduled run ``missed`` and end it in Prefect, without running it.

        A scheduled run of the run-task flow whose task's misfire grace has passed
        (a backlog after the worker or the Prefect API was away) does not take its
        deployment's concurrency slot: its flow run becomes Cancelled, named
        ``Missed``, with the reason as message (event ``prefect.flow-run.Missed``,
        which starts no chain), and it gets one ``missed`` history row, counted
        once, through the same code as a run that records itself missed. Returns
        True when the run is over (recorded missed, or deleted).
        """
        request = _schedule_request(flow_run, self.get_flow_run_logger(flow_run))
        if request is None:
            return False
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Cancelled

        from svrctl.execution.engine import misfire, record_missed
        from svrctl.runtime import app_database

        try:
            if entrypoint is None:
                entrypoint = await self._entrypoint_of(flow_run)
            if entrypoint != RUN_TASK_ENTRYPOINT:
                return False
            error = await anyio.to_thread.run_sync(lambda: misfire(app_database(), request))
            if error is None:
                return False
            state: State[Any] = Cancelled(name=MISSED_STATE_NAME, message=error)
            result = await _until_api_answers(
                lambda: self.client.set_flow_run_state(flow_run.id, state),
                "record the flow run missed",
                self._logger,
            )
        except ObjectNotFound:
            return True
        except Exception as exc:  # the run is claimed as usual and reports the problem itself
            self._logger.warning(
                "could not check whether flow run %s is missed: %s: %s",
                flow_run.id,
                type(exc).__name__,
                exc,
            )
            return False
        if result.status is not SetStateStatus.ACCEPT:
            return False
        try:  # the row, counted once; its warning goes to the run's log
            missed = await anyio.to_thread.run_sync(
                lambda: record_missed(app_database(), request, error)
            )
        except Exception:
            request.log.exception("the missed run's history row could not be written")
            return True
        if self._runs_task_group is not None:
            self._runs_task_group.start_soon(self._notify_missed, missed, str(flow_run.id))
            if flow_run.deployment_id is not None:
                self._runs_task_group.start_soon(
                    self._record_cancelled_stale, flow_run.deployment_id
                )
        return True

    async def _record_cancelled_stale(self, deployment_id: UUID) -> None:
        """Record ``missed`` the stale runs Prefect cancelled for the deployment's limit.

        While a run the worker claimed before an outage still holds its
        deployment's slot, Prefect cancels the runs it marks Late meanwhile
        (overlap ``skip``) before any worker sees them. Once the worker has recorded
        a run of the deployment missed (which frees the slot), each such run that
        was already later than its task's misfire grace when Prefect cancelled it,
        and has no history row, gets its ``missed`` row and the same Cancelled
        state named ``Missed``. Never fails.
        """
        if deployment_id in self._sweeping:
            return
        self._sweeping.add(deployment_id)
        try:
            for run in await self._cancelled_for_concurrency(deployment_id):
                await self._record_one_cancelled(run)
        except Exception as exc:
            self._logger.warning(
                "could not look for stale runs cancelled by Prefect: %s: %s",
                type(exc).__name__,
                exc,
            )
        finally:
            self._sweeping.discard(deployment_id)

    async def _cancelled_for_concurrency(self, deployment_id: UUID) -> list[FlowRun]:
        """Return the deployment's recent runs Prefect cancelled for its concurrency limit."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        runs = await _until_api_answers(
            lambda: self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.CANCELLED])
                    ),
                    expected_start_time=FlowRunFilterExpectedStartTime(
                        # typed as Prefect's DateTime; any aware datetime is accepted
                        after_=cast(Any, datetime.now(UTC) - CANCELLED_LOOKBACK)
                    ),
                ),
                limit=CANCELLED_LOOKUP_LIMIT,
            ),
            "read the cancelled flow runs",
            self._logger,
        )
        return [
            r
            for r in runs
            if r.state is not None
            and r.state.name == "Cancelled"
            and r.state.message == CONCURRENCY_CANCELLED
        ]

    async def _record_one_cancelled(self, run: FlowRun) -> None:
        """Record one run Prefect cancelled for concurrency ``missed``, if it was stale."""
        from prefect.states import Cancelled

        from svrctl.execution.engine import record_missed
        from svrctl.runtime import app_database

        request = _schedule_request(run, self.get_flow_run_logger(run))
        if request is None or run.state is None:
            return
        at = run.state.timestamp
        error = await anyio.to_thread.run_sync(lambda: _stale_without_rows(request, at))
        if error is None:
            return
        error += " (Prefect cancelled it: an earlier run of the task held its slot)"
        state: State[Any] = Cancelled(name=MISSED_STATE_NAME, message=error)
        await _until_api_answers(
            lambda: self.client.set_flow_run_state(run.id, state, force=True),
            "record the flow run missed",
            self._logger,
        )
        missed = await anyio.to_thread.run_sync(
            lambda: record_missed(app_database(), request, error)
        )
        if self._runs_task_group is not None:
            self._runs_task_group.start_soon(self._notify_missed, missed, str(run.id))

    async def _entrypoint_of(self, flow_run: FlowRun) -> str | None:
        """Return the entrypoint of the flow run's deployment (read once per deployment)."""
        deployment_id = flow_run.deployment_id
        if deployment_id is None:
            return None
        if deployment_id not in self._entrypoints:
            deployment = await _until_api_answers(
                lambda: self.client.read_deployment(deployment_id),
                "read the flow run's deployment",
                self._logger,
            )
            self._entrypoints[deployment_id] = deployment.entrypoint
        return self._entrypoints[deployment_id]

    async def _notify_missed(self, result: TaskExecutionResult, flow_run_id: str) -> None:
        """Run the notification hook for a run recorded missed; never fails, never waits long."""
        from svrctl.notify.after_run import notify_after_run, run_from_result
        from svrctl.runtime import app_database, app_settings

        try:
            settings = app_settings()
            with anyio.move_on_after(settings.notify_timeout_seconds + NOTIFY_GRACE_SECONDS):
                await anyio.to_thread.run_sync(
                    lambda: notify_after_run(
                        app_database(settings), settings, run_from_result(result, flow_run_id)
                    ),
                    abandon_on_cancel=True,
                )
        except Exception as exc:
            self._logger.warning(
                "notifications of missed flow run %s failed: %s", flow_run_id, type(exc).__name__
            )

    async def _give_worker_labels_to_flow_run(self, flow_run_id: UUID) -> None:
        """Label a claimed run with this worker, trying again while the API is unreachable."""
        give = super()._give_worker_labels_to_flow_run
        await _until_api_answers(lambda: give(flow_run_id), "label the flow run", self._logger)

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """Mark a claimed run Submitting, trying again while the API is unreachable (bounded)."""
        from prefect.exceptions import Abort
        from prefect.states import Submitting
        from prefect.utilities.engine import propose_state

        try:
            await _until_api_answers(
                lambda: propose_state(self.client, Submitting(), flow_run_id=flow_run.id),
                "mark the flow run submitting",
                self._logger,
            )
        except Abort:
            pass
        except Exception:  # as in Prefect's worker: the run goes on
            self._logger.debug(
                "Failed to update flow run '%s' to Submitting state", flow_run.id, exc_info=True
            )

    async def _propose_crashed_state(
        self, flow_run: FlowRun, message: str, client: PrefectClient | None = None
    ) -> None:
        """Report a run Crashed; while the API is unreachable, wait for it first (bounded).

        Prefect's worker gives up on the report at once, which would leave a run
        this worker claimed Pending, holding its deployment's concurrency slot.
        """
        api = client or self.client
        with contextlib.suppress(Exception):  # the report below says what went wrong
            await _until_api_answers(
                lambda: api.read_flow_run(flow_run.id), "report the flow run crashed", self._logger
            )
        await super()._propose_crashed_state(flow_run, message, client=client)

    async def _run_job(
        self,
        flow: Flow[Any, Any],
        flow_run: FlowRun,
        configuration: SvrctlJobConfiguration,
        job: _Job,
    ) -> int:
        """Wait for the run's time, run it with the engine; make sure it ends in a final state."""
        run_logger = self.get_flow_run_logger(flow_run)
        code = 0
        try:
            with anyio.CancelScope() as scope:
                job.scope = scope
                if job.cancel_requested:
                    scope.cancel()
                if configuration.wait_for_scheduled_time:
                    await _sleep_until(_scheduled_time(flow_run))
                fresh = await _until_api_answers(
                    lambda: self.client.read_flow_run(flow_run.id), "start the flow run", run_logger
                )
                if fresh.state is not None and fresh.state.is_cancelling():
                    job.cancel(CANCELLED_IN_PREFECT)  # before the observer saw it
                    await anyio.lowlevel.checkpoint()
                elif await self._record_if_missed(fresh, configuration.entrypoint):
                    return code  # claimed in time, but the API was away until it was stale
                engine = _InProcessFlowRunEngine(
                    flow=flow,
                    flow_run=fresh,
                    parameters=_parameters(flow, fresh),
                    control=job.control,
                )
                job.engine = engine
                token = run_control.set(job.control)
                try:
                    await _drive(engine)
                finally:
                    run_control.reset(token)
        except anyio.get_cancelled_exc_class():
            # Not this run's own cancellation (that ends inside the scope): the worker stops.
            job.cancel_requested = True
            with anyio.CancelScope(shield=True):
                await self._ensure_final(flow_run, job)
            raise
        except Exception as exc:
            run_logger.exception("the svrctl worker could not run flow run %s", flow_run.id)
            await self._propose_crashed_state(
                flow_run, f"the svrctl worker could not run the flow: {type(exc).__name__}: {exc}"
            )
            code = 1
        if job.cancel_requested:
            with anyio.CancelScope(shield=True):
                await self._ensure_final(flow_run, job)
        return code

    async def _ensure_final(self, flow_run: FlowRun, job: _Job) -> None:
        """Settle the state of a run stopped by cancellation, unless the engine did.

        A run cancelled in Prefect becomes Cancelled. A run the worker picked up
        but had not started when it stopped (waiting for its scheduled time) is
        scheduled again, for the next worker to run.
        """
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Cancelled, Scheduled

        try:
            current = await self.client.read_flow_run(flow_run.id)
        except ObjectNotFound:
            return
        if current.state is not None and current.state.is_final():
            return
        state: State[Any]
        if job.engine is None and job.control.reason == WORKER_STOPPED:
            when = _scheduled_time(flow_run) or datetime.now(UTC)
            state = Scheduled(scheduled_time=when, message="The svrctl worker stopped first.")
        else:
            state = Cancelled(message=f"Cancelled: {job.control.reason or CANCELLED_IN_PREFECT}.")
        try:
            await self.client.set_flow_run_state(flow_run.id, state, force=True)
        except ObjectNotFound:
            return

    async def _load_flow(self, entrypoint: str | None) -> Flow[Any, Any]:
        """Return the deployment's flow, imported once per entrypoint."""
        if not entrypoint:
            raise ValueError(
                "the flow run's deployment has no entrypoint: the svrctl worker runs "
                "deployments whose entrypoint names a flow, such as "
                f"{RUN_TASK_ENTRYPOINT!r}"
            )
        if entrypoint in self._flows:
            return self._flows[entrypoint]
        if self._flow_lock is None:
            self._flow_lock = asyncio.Lock()
        async with self._flow_lock:
            if entrypoint not in self._flows:
                from prefect.flows import load_flow_from_entrypoint

                self._flows[entrypoint] = await anyio.to_thread.run_sync(
                    lambda: load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
                )
            return self._flows[entrypoint]

    # ------------------------------------------------------------------ cancellation

    def _on_cancelling(self, flow_run_id: UUID) -> None:
        """Cancel a run of this worker that Prefect set to Cancelling."""
        job = self._jobs.get(flow_run_id)
        if job is not None:
            self._logger.info("cancelling flow run %s", flow_run_id)
            job.cancel(CANCELLED_IN_PREFECT)

    async def _cancel_run(self, flow_run_id: UUID) -> None:
        """Cancel a run of this worker at once; leave anything else to BaseWorker."""
        job = self._jobs.get(flow_run_id)
        if job is None:
            await super()._cancel_run(flow_run_id)
            return
        self._logger.info("cancelling flow run %s", flow_run_id)
        job.cancel(CANCELLED_IN_PREFECT)

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: SvrctlJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """Cancel the run an identifier names, when it runs in this worker."""
        from prefect.exceptions import InfrastructureNotAvailable, InfrastructureNotFound

        host, _, rest = infrastructure_pid.partition(":")
        pid, _, run_id = rest.partition(":")
        if host != _HOSTNAME or pid != str(os.getpid()):
            raise InfrastructureNotAvailable(
                f"flow run {run_id or infrastructure_pid} runs in another svrctl worker "
                f"({host}, pid {pid})"
            )
        try:
            job = self._jobs.get(UUID(run_id))
        except ValueError:
            job = None
        if job is None:
            raise InfrastructureNotFound(f"flow run {run_id} no longer runs in this worker")
        job.cancel(CANCELLED_IN_PREFECT)


# How many svrctl workers run in this process: while any does, Prefect's flow engine
# does not install its SIGTERM handler for the runs (see _hold_sigterm).
_ENGINE_SIGTERM_HOOK = "capture_sigterm"  # what AsyncFlowRunEngine.start() calls
_sigterm_holders = 0
_sigterm_lock = threading.Lock()
_engine_capture_sigterm: Callable[[], contextlib.AbstractContextManager[None]] | None = None


def _hold_sigterm() -> None:
    """Keep Prefect's flow engine from taking SIGTERM over while this process runs workers.

    For each flow run, the engine replaces the process's SIGTERM handler with one that
    raises ``TerminationSignal`` wherever the main thread is. Here that is the worker's
    event loop, running other runs and the worker itself: the exception could land
    in a socket write or in another run, crashing it. The worker's process handles
    SIGTERM itself (``svrctl worker``: it stops every run cleanly).
    """
    global _sigterm_holders, _engine_capture_sigterm
    import prefect.flow_engine as flow_engine

    with _sigterm_lock:
        if _sigterm_holders == 0:
            _engine_capture_sigterm = vars(flow_engine)[_ENGINE_SIGTERM_HOOK]
            setattr(flow_engine, _ENGINE_SIGTERM_HOOK, contextlib.nullcontext)
        _sigterm_holders += 1


def _release_sigterm() -> None:
    """Undo ``_hold_sigterm`` once the last worker of the process has stopped."""
    global _sigterm_holders, _engine_capture_sigterm
    import prefect.flow_engine as flow_engine

    with _sigterm_lock:
        _sigterm_holders -= 1
        if _sigterm_holders == 0 and _engine_capture_sigterm is not None:
            setattr(flow_engine, _ENGINE_SIGTERM_HOOK, _engine_capture_sigterm)
            _engine_capture_sigterm = None


async def _drive(engine: _InProcessFlowRunEngine) -> None:
    """Run a flow run to its end, as ``prefect.flow_engine.run_flow_async`` does."""
    async with engine.start():
        while engine.is_running():
            async with engine.run_context():
                # Typed as returning a coroutine; awaiting it runs the flow to its end.
                _ = await engine.call_flow_fn()


def _parameters(flow: Flow[Any, Any], flow_run: FlowRun) -> dict[str, Any]:
    """Return the call parameters of a flow run, with the flow's defaults filled in."""
    from prefect.utilities.callables import get_call_parameters, parameters_to_args_kwargs

    args, kwargs = parameters_to_args_kwargs(flow.fn, flow_run.parameters or {})
    return get_call_parameters(flow.fn, args, kwargs)


def _schedule_request(
    flow_run: FlowRun, run_logger: logging.LoggerAdapter[Any]
) -> RunRequest | None:
    """Return the run request of a scheduled run more than LATE_CHECK_SECONDS late, else None."""
    due = flow_run.expected_start_time
    if flow_run.deployment_id is None or not flow_run.auto_scheduled or due is None:
        return None
    if datetime.now(UTC) - due <= timedelta(seconds=LATE_CHECK_SECONDS):
        return None
    parameters = flow_run.parameters or {}
    task_id, force = parameters.get("task_id"), parameters.get("force", False)
    if type(task_id) is not int or not isinstance(force, bool):
        return None  # the run itself refuses bad parameters
    from svrctl.db.models import TriggeredBy
    from svrctl.execution.engine import RunRequest

    return RunRequest(
        task_id=task_id,
        force=force,
        triggered_by=TriggeredBy.SCHEDULE,
        flow_run_id=str(flow_run.id),
        scheduled_at=due,
        log=run_logger,
    )


def _stale_without_rows(request: RunRequest, at: datetime) -> str | None:
    """Return the ``missed`` message of a run with no history row, stale at ``at``; else None."""
    from sqlalchemy import select

    from svrctl.db.models import TaskHistory
    from svrctl.execution.engine import misfire
    from svrctl.runtime import app_database

    db = app_database()
    with db.read() as session:
        seen = session.scalar(
            select(TaskHistory.id).where(TaskHistory.flow_run_id == request.flow_run_id).limit(1)
        )
    if seen is not None:
        return None
    return misfire(db, request, at)


def _api_unreachable(exc: BaseException) -> bool:
    """Tell whether an error says the Prefect API is away (not that it refused the call)."""
    import httpx

    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in API_AWAY_STATUSES


def _describe(exc: BaseException) -> str:
    """Name an API error for a log line: its type, and its HTTP status when it has one."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"{type(exc).__name__}: HTTP {exc.response.status_code}"
    return type(exc).__name__


def _client_retries_off() -> contextlib.AbstractContextManager[Any]:
    """Turn the Prefect client's own retries off for the calls made inside (this task only)."""
    global _retries_off
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    context = get_settings_context()
    if _retries_off is not None and context.settings is _retries_off[1]:
        return contextlib.nullcontext()  # already off
    if _retries_off is None or _retries_off[0] is not context.settings:
        off = context.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
        _retries_off = (context.settings, off)
    return SettingsContext(profile=context.profile, settings=_retries_off[1])


async def _until_api_answers(
    call: Callable[[], Awaitable[T]],
    what: str,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> T:
    """Await ``call``; while the Prefect API is unreachable, call it again with backoff.

    Gives up after API_RETRY_SECONDS, raising the last error; any other error is
    raised at once.
    """
    deadline = time.monotonic() + API_RETRY_SECONDS
    delay, warned = 1.0, False
    while True:
        try:
            with _client_retries_off():
                result = await call()
        except Exception as exc:
            if not _api_unreachable(exc) or time.monotonic() + delay > deadline:
                raise
            if not warned:
                logger.warning(
                    "the Prefect API is unreachable (%s): trying to %s again until it is back",
                    _describe(exc),
                    what,
                )
                warned = True
            await anyio.sleep(delay)
            delay = min(delay * 2, API_RETRY_MAX_DELAY)
            continue
        if warned:
            logger.info("the Prefect API is back: %s done", what)
        return result


def _scheduled_time(flow_run: FlowRun) -> datetime | None:
    """Return when a flow run is due: its Scheduled state's time, else the expected start."""
    state = flow_run.state
    if state is not None and state.is_scheduled() and state.state_details.scheduled_time:
        return state.state_details.scheduled_time
    return flow_run.next_scheduled_start_time or flow_run.expected_start_time


async def _sleep_until(when: datetime | None) -> None:
    """Sleep until ``when`` (an aware time); return at once if it has passed."""
    if when is None:
        return
    delay = (when - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await anyio.sleep(delay)


def default_query_seconds() -> float:
    """Return the poll interval: PREFECT_WORKER_QUERY_SECONDS when set, else 1 s."""
    from prefect.settings import get_current_settings

    worker = get_current_settings().worker
    if "query_seconds" in worker.model_fields_set:
        return float(worker.query_seconds)
    return DEFAULT_QUERY_SECONDS


async def ensure_work_pool(name: str) -> None:
    """Create the work pool ``name`` of type svrctl unless it exists (idempotent).

    Raises:
        BadInputError: The pool exists with another type.
    """
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from svrctl.exceptions import BadInputError

    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type=WORKER_TYPE,
                        description="svrctl tasks, run in-process by the svrctl worker",
                        base_job_template=SvrctlWorker.get_default_base_job_template(),
                    )
                )
                return
            except ObjectAlreadyExists:  # created meanwhile by another process
                pool = await client.read_work_pool(name)
    if pool.type != WORKER_TYPE:
        raise BadInputError(
            f"the work pool {name!r} has type {pool.type!r}, not {WORKER_TYPE!r}: pick another "
            f"pool name, or run a {pool.type!r} worker for it",
            field="pool",
        )


async def run_worker(
    pool: str,
    *,
    limit: int = DEFAULT_LIMIT,
    query_seconds: float | None = None,
    name: str | None = None,
    printer: Callable[..., None] = print,
) -> None:
    """Create the pool if missing and run an svrctl worker on it until cancelled.

    Args:
        pool: The work pool's name.
        limit: Flow runs at once.
        query_seconds: Seconds between polls; default PREFECT_WORKER_QUERY_SECONDS
            when set, else 1 s.
        name: The worker's name; a random one by default.
        printer: Where the worker's start and stop lines go.
    """
    await ensure_work_pool(pool)
    worker = SvrctlWorker(
        work_pool_name=pool,
        name=name,
        limit=limit,
        query_seconds=query_seconds,
        create_pool_if_not_found=False,
    )
    await worker.start(printer=printer)


def start_worker(
    pool: str, *, limit: int = DEFAULT_LIMIT, query_seconds: float | None = None
) -> None:
    """Run an svrctl worker on ``pool`` in this thread until interrupted (Ctrl-C).

    Args:
        pool: The work pool's name.
        limit: Flow runs at once.
        query_seconds: Seconds between polls; default PREFECT_WORKER_QUERY_SECONDS
            when set, else 1 s.
    """
    try:
        asyncio.run(run_worker(pool, limit=limit, query_seconds=query_seconds))
    except KeyboardInterrupt:
        log.info("svrctl worker stopped")
