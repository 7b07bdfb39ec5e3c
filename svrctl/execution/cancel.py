"""Stopping a run in progress: a cancel token, and a thread call that honours cancellation.

A run's step blocks in a thread (paramiko, subprocess), where asyncio
cancellation cannot reach it. :func:`run_sync_cancellable` runs such a function
with a :class:`CancelToken`. When the awaiting task is cancelled (Prefect
cancelled the flow run, or the worker running it is stopping), it cancels the
token and waits, shielded and bounded, until the function has wound down: what
the step started is stopped (see :mod:`svrctl.execution.stopping`) and its
history rows are finished as ``cancelled`` before the cancellation goes on.

This module imports nothing heavy: the svrctl worker imports it, and Prefect
imports the worker module wherever it loads its collections.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_CANCEL_GRACE_SECONDS",
    "DEFAULT_CANCEL_REASON",
    "STEP_STOP_SECONDS",
    "CancelToken",
    "RunControl",
    "run_control",
    "run_sync_cancellable",
]

log = logging.getLogger("svrctl.cancel")

T = TypeVar("T")

# How long a cancelled run may take to stop its step and finish its rows.
DEFAULT_CANCEL_GRACE_SECONDS = 20.0
# How long a cancelled step may take to stop once its stoppers ran, before it is abandoned.
STEP_STOP_SECONDS = 10.0
DEFAULT_CANCEL_REASON = "the flow run was cancelled"


@dataclass
class RunControl:
    """How whoever runs a flow run wants it stopped; the svrctl worker sets one per run."""

    grace_seconds: float = DEFAULT_CANCEL_GRACE_SECONDS
    reason: str | None = None


# Set by the svrctl worker around each flow run it runs in its process.
run_control: ContextVar[RunControl | None] = ContextVar("svrctl_run_control", default=None)


class CancelToken:
    """A request to stop a run, and the stoppers of what the run has started.

    ``cancel`` is idempotent and returns at once: the stoppers (which may talk to
    a server) run in a separate thread. A stopper registered after the token was
    cancelled runs at once, in the registering thread.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._stoppers: dict[int, Callable[[], None]] = {}
        self._next = 0
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        """Return whether the run was asked to stop."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for cancellation; return whether it came."""
        return self._event.wait(timeout)

    def cancel(self, reason: str = DEFAULT_CANCEL_REASON) -> None:
        """Ask the run to stop, and run every registered stopper (in a separate thread)."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            stoppers = list(self._stoppers.values())
            self._stoppers.clear()
        if stoppers:
            threading.Thread(
                target=_run_all, args=(stoppers,), name="svrctl-cancel", daemon=True
            ).start()

    def on_cancel(self, stopper: Callable[[], None]) -> Callable[[], None]:
        """Register ``stopper`` to run on cancellation; return a function that unregisters it."""
        with self._lock:
            if not self._event.is_set():
                key = self._next
                self._next += 1
                self._stoppers[key] = stopper

                def forget() -> None:
                    with self._lock:
                        self._stoppers.pop(key, None)

                return forget
        _run_all([stopper])
        return _nothing


def _nothing() -> None:
    return None


def _run_all(stoppers: list[Callable[[], None]]) -> None:
    for stopper in stoppers:
        try:
            stopper()
        except Exception:  # one failed stopper must not keep the others from running
            log.warning("stopping part of a cancelled run failed", exc_info=True)


async def run_sync_cancellable(
    fn: Callable[[CancelToken], T], *, grace_seconds: float | None = None
) -> T:
    """Run ``fn(token)`` in a worker thread; on cancellation, stop it before re-raising.

    Args:
        fn: The blocking function. It should watch the token (and register
            stoppers on it) so that it returns soon after cancellation.
        grace_seconds: How long to wait for ``fn`` to return once cancelled;
            default: the worker's setting for this run (see ``run_control``), else
            DEFAULT_CANCEL_GRACE_SECONDS. After that the thread is abandoned.

    Returns:
        What ``fn`` returned.

    Raises:
        BaseException: What ``fn`` raised, or the cancellation itself.
    """
    import anyio

    token = CancelToken()
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(token)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    try:
        # A thread of its own, outside anyio's shared pool of 40: a step blocks for as
        # long as its task's timeout, and the runs in one process (the svrctl worker's
        # limit) must neither wait for each other's steps nor starve Prefect and the
        # notification hook, which use that pool.
        await anyio.to_thread.run_sync(
            work, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(1)
        )
    except anyio.get_cancelled_exc_class():
        control = run_control.get()
        reason = (control.reason if control is not None else None) or DEFAULT_CANCEL_REASON
        if grace_seconds is None:
            grace_seconds = (
                control.grace_seconds if control is not None else DEFAULT_CANCEL_GRACE_SECONDS
            )
        token.cancel(reason)
        with anyio.CancelScope(shield=True), anyio.move_on_after(grace_seconds):
            while not done.is_set():
                await anyio.sleep(0.05)
        if not done.is_set():
            log.warning("a cancelled step did not stop within %g s: abandoned", grace_seconds)
        raise
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
