"""Keep idle SSH connections open for a short while, as OpenSSH's ControlPersist does.

A worker runs the same servers' tasks again and again; reusing a verified,
authenticated connection saves the TCP, key-exchange and auth round trips.
Each connection serves one run at a time; an idle one is closed after
``idle_seconds``, and a connection that turns out to be dead is replaced once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from svrctl.ssh.connection import SshSession, connect
from svrctl.ssh.target import SshTarget

__all__ = ["ConnectionPool", "default_pool"]


class ConnectionPool:
    """Idle connections by target, reused for at most ``idle_seconds`` after their last use."""

    def __init__(self, idle_seconds: float = 60.0, max_idle_per_target: int = 4) -> None:
        self.idle_seconds = idle_seconds
        self.max_idle_per_target = max_idle_per_target
        self._idle: dict[SshTarget, list[tuple[float, SshSession]]] = {}
        self._lock = threading.Lock()

    def _take(self, target: SshTarget) -> SshSession | None:
        now = time.monotonic()
        with self._lock:
            stack = self._idle.get(target, [])
            while stack:
                since, session = stack.pop()
                if now - since <= self.idle_seconds and session.transport.is_active():
                    return session
                session.close()
        return None

    def _give_back(self, session: SshSession) -> None:
        if self.idle_seconds <= 0 or not session.transport.is_active():
            session.close()
            return
        now = time.monotonic()
        with self._lock:
            for other in self._idle.values():  # close whatever expired meanwhile
                while other and now - other[0][0] > self.idle_seconds:
                    other.pop(0)[1].close()
            stack = self._idle.setdefault(session.target, [])
            stack.append((now, session))
            while len(stack) > self.max_idle_per_target:
                stack.pop(0)[1].close()

    @contextmanager
    def session(self, target: SshTarget, *, fresh: bool = False) -> Iterator[SshSession]:
        """Yield an open session to ``target``: an idle one if any (unless ``fresh``), else new."""
        session = None if fresh else self._take(target)
        if session is None:
            session = connect(target)
        healthy = False
        try:
            yield session
            healthy = True
        finally:
            if healthy:
                self._give_back(session)
            else:
                session.close()

    def close_idle(self, older_than: float | None = None) -> int:
        """Close idle connections (those idle longer than ``older_than`` s); return how many."""
        now = time.monotonic()
        closed = 0
        with self._lock:
            for target, stack in list(self._idle.items()):
                keep = []
                for since, session in stack:
                    if older_than is None or now - since > older_than:
                        session.close()
                        closed += 1
                    else:
                        keep.append((since, session))
                self._idle[target] = keep
        return closed


default_pool = ConnectionPool()
