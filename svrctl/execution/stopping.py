"""Stop what a cancelled step started: its command on the server, or on this host.

The runners stop everything a command started when its *timeout* expires. A
cancellation comes from outside, while the step blocks in a runner, so the
executor wraps what it hands the runners:

- SSH: :class:`StoppablePool` gives the runner sessions whose channels note the
  session id that the remote shell reports first thing (the same marker the
  timeout uses). On cancellation the same connection runs the timeout's kill
  script for that session, so the command and everything it started on the
  server stop, and the runner returns at once.
- Local: :class:`StoppableLocalRunner` finds the bash that prefect-shell started
  for the command (a child of this process leading its own session, running a
  script file with exactly this command) and kills its session and descendants.
  Two identical local commands running at once in one process cannot be told
  apart; both are stopped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from svrctl.commands import CommandResult, CommandRunner, LineCallback
from svrctl.execution.cancel import STEP_STOP_SECONDS, CancelToken
from svrctl.ssh.connection import SshSession
from svrctl.ssh.pool import ConnectionPool
from svrctl.ssh.remote import kill_script, parse_pid_line
from svrctl.ssh.target import SshTarget

__all__ = ["StoppableLocalRunner", "StoppablePool", "local_command_pids"]

log = logging.getLogger("svrctl.cancel")

# How long a stopper waits for the remote shell to report its session id.
_PID_WAIT_SECONDS = 3.0
# Only the start of a stream can hold the session id marker.
_HEAD_BYTES = 4096


class StoppablePool(ConnectionPool):
    """A view of a connection pool whose sessions' commands a cancel token can stop."""

    def __init__(self, inner: ConnectionPool, token: CancelToken) -> None:
        super().__init__(inner.idle_seconds, inner.max_idle_per_target)
        self._inner = inner
        self._token = token

    @contextmanager
    def session(self, target: SshTarget, *, fresh: bool = False) -> Iterator[SshSession]:
        """Yield a session of the inner pool whose channels the token can stop."""
        with self._inner.session(target, fresh=fresh) as session:
            yield _StoppableSession(session, self._token)


class _StoppableSession(SshSession):
    """The same connection; every channel it opens is watched for the session id."""

    def __init__(self, inner: SshSession, token: CancelToken) -> None:
        super().__init__(inner.target, inner.transport, inner.via)
        self.auth_method = inner.auth_method
        self._token = token

    def open_channel(self, timeout: float) -> Any:
        """Open a channel as usual, watched so that cancellation can stop its command."""
        channel = super().open_channel(timeout)
        return _StoppableChannel(channel, self, self._token)


class _StoppableChannel:
    """A paramiko channel that notes the remote session id and stops it on cancellation."""

    def __init__(self, channel: Any, session: SshSession, token: CancelToken) -> None:
        self._channel = channel
        self._session = session
        self._head = b""
        self._pid: int | None = None
        self._pid_seen = threading.Event()
        self._forget = token.on_cancel(self._stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def fileno(self) -> int:
        """Return the channel's file descriptor, for select."""
        fd: int = self._channel.fileno()
        return fd

    def recv(self, nbytes: int) -> bytes:
        """Read stdout (which holds the marker too when a pty merges the streams)."""
        data: bytes = self._channel.recv(nbytes)
        self._note(data)
        return data

    def recv_stderr(self, nbytes: int) -> bytes:
        """Read stderr, noting the session id marker."""
        data: bytes = self._channel.recv_stderr(nbytes)
        self._note(data)
        return data

    def close(self) -> None:
        """Close the channel; the command is over, so cancellation no longer concerns it."""
        self._forget()
        self._channel.close()

    def _note(self, data: bytes) -> None:
        if self._pid is not None or len(self._head) > _HEAD_BYTES:
            return
        self._head += data
        pid, _ = parse_pid_line(self._head)
        if pid is not None:
            self._pid = pid
            self._pid_seen.set()

    def _stop(self) -> None:
        """Kill the command's session on the server; without its id, close the channel."""
        self._pid_seen.wait(_PID_WAIT_SECONDS)
        pid = self._pid
        target = self._session.target
        if pid is None or not self._session.transport.is_active():
            self._channel.close()
            return
        try:
            killer = self._session.transport.open_session(timeout=STEP_STOP_SECONDS)
            killer.exec_command(kill_script(pid))
            if not killer.status_event.wait(STEP_STOP_SECONDS):
                log.warning("stopping the cancelled command on %s took too long", target.name)
            killer.close()
        except Exception as exc:
            log.warning("could not stop the cancelled command on %s: %s", target.name, exc)
            self._channel.close()


class StoppableLocalRunner:
    """A local runner whose running command a cancel token can kill, with all it started."""

    def __init__(self, runner: CommandRunner, token: CancelToken) -> None:
        self.name = runner.name
        self._runner = runner
        self._token = token

    def run(
        self, command: str, *, timeout: float, on_line: LineCallback | None = None
    ) -> CommandResult:
        """Run ``command`` with the inner runner; cancellation kills it."""

        def stop() -> None:
            for pid in local_command_pids(command):
                _kill_session(pid)

        forget = self._token.on_cancel(stop)
        try:
            return self._runner.run(command, timeout=timeout, on_line=on_line)
        finally:
            forget()


def local_command_pids(command: str) -> list[int]:
    """Return the pids of this process's children running ``command`` as prefect-shell does.

    prefect-shell writes the command to a script file and starts ``bash FILE`` in
    a new session; such a child leads its own session and its script holds
    exactly the command.
    """
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            ppid, sid = int(fields[1]), int(fields[3])
            if ppid != me or sid != int(entry.name):
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            script = Path(os.fsdecode(argv[1])) if len(argv) > 1 else None
            if script is not None and script.read_text(errors="replace") == command:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _kill_session(pid: int) -> None:
    """Kill a local session and every descendant, as the local runner's timeout does."""
    try:
        subprocess.run(["/bin/sh", "-c", kill_script(pid)], check=False, timeout=STEP_STOP_SECONDS)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not stop the cancelled local command (pid %d): %s", pid, exc)
