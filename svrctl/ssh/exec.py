"""Running one command on an open connection: streamed, bounded, and stopped on timeout."""

from __future__ import annotations

import logging
import re
import select
import time
from typing import TYPE_CHECKING

import paramiko

from svrctl.commands import CommandResult, LineCallback
from svrctl.exceptions import ChannelClosedError, CommandTimedOutError, SshError
from svrctl.ssh.output import BoundedBuffer, LineSplitter
from svrctl.ssh.remote import PID_MARKER, SUDO_PROMPT, kill_script, wrap_command

if TYPE_CHECKING:
    from svrctl.ssh.connection import SshSession

__all__ = ["CommandResult", "run_on_session"]

log = logging.getLogger("svrctl.ssh")

_PROMPT = SUDO_PROMPT.encode()
_PID_LINE = re.compile(re.escape(PID_MARKER) + rb"(\d+)\r?\n")
_READ_SIZE = 64 * 1024
_KILL_WAIT_SECONDS = 10.0
_MASK = "********"


class _StreamFilter:
    """Take svrctl's own markers (session id, sudo prompt) out of one output stream."""

    def __init__(self) -> None:
        self.carry = b""
        self.pid: int | None = None
        self.prompts = 0

    def feed(self, data: bytes) -> bytes:
        buf = self.carry + data
        self.carry = b""
        out = bytearray()
        while buf:
            i = buf.find(b"\x1e")
            if i < 0:
                out += buf
                break
            out += buf[:i]
            rest = buf[i:]
            if rest.startswith(_PROMPT):
                self.prompts += 1
                buf = rest[len(_PROMPT) :]
                continue
            match = _PID_LINE.match(rest)
            if match and self.pid is None:
                self.pid = int(match.group(1))
                buf = rest[match.end() :]
                continue
            if self._maybe_partial(rest):
                self.carry = rest
                break
            out += rest[:1]
            buf = rest[1:]
        return bytes(out)

    @staticmethod
    def _maybe_partial(rest: bytes) -> bool:
        if len(rest) < len(_PROMPT) and _PROMPT.startswith(rest):
            return True
        if len(rest) < len(PID_MARKER):
            return PID_MARKER.startswith(rest)
        tail = rest[len(PID_MARKER) :]
        digits = tail.rstrip(b"\r")
        return rest.startswith(PID_MARKER) and len(tail) < 24 and (not tail or digits.isdigit())

    def flush(self) -> bytes:
        carry, self.carry = self.carry, b""
        return carry


class _Stream:
    """One output stream: marker filter, bounded capture and optional live lines."""

    def __init__(
        self, name: str, limit: int, on_line: LineCallback | None, secret: str | None
    ) -> None:
        self.name = name
        self.filter = _StreamFilter()
        self.buffer = BoundedBuffer(limit)
        self.secret = secret
        self.lines = LineSplitter(self._emit) if on_line is not None else None
        self._on_line = on_line

    def _emit(self, line: str) -> None:
        assert self._on_line is not None
        self._on_line(self.name, _mask(line, self.secret))

    def feed(self, data: bytes) -> None:
        clean = self.filter.feed(data)
        if clean:
            self.buffer.write(clean)
            if self.lines is not None:
                self.lines.feed(clean)

    def close(self) -> None:
        rest = self.filter.flush()
        if rest:
            self.buffer.write(rest)
            if self.lines is not None:
                self.lines.feed(rest)
        if self.lines is not None:
            self.lines.close()


def _mask(text: str, secret: str | None) -> str:
    return text.replace(secret, _MASK) if secret else text


def run_on_session(
    session: SshSession,
    command: str,
    *,
    timeout: float,
    output_limit: int = 1024 * 1024,
    on_line: LineCallback | None = None,
    pty: bool = False,
) -> CommandResult:
    """Run ``command`` with the user's shell and return its result.

    Output is streamed to ``on_line(stream, line)`` as it arrives and each stream is
    kept up to ``output_limit`` bytes (head and tail). When ``timeout`` expires,
    every process the command started on the server is killed and the result says
    ``timed_out``. A sudo password prompt is answered from the target's
    ``sudo_password`` (never echoed into output or logs); with no password, sudo's
    stdin is closed so it fails at once instead of hanging.
    """
    target = session.target
    secret = target.sudo_password
    started = time.monotonic()
    deadline = started + timeout
    chan = session.open_channel(timeout=max(1.0, min(timeout, 30.0)))
    streams = {
        "stdout": _Stream("stdout", output_limit, on_line, secret),
        "stderr": _Stream("stderr", output_limit, on_line, secret),
    }
    answered = 0
    timed_out = False
    error: SshError | None = None
    try:
        if pty:
            chan.get_pty(term="dumb", width=500, height=50)
        chan.exec_command(wrap_command(command))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            _drain(chan, streams, until=deadline)
            prompts = sum(s.filter.prompts for s in streams.values())
            while answered < prompts:
                answered += 1
                if secret is None:
                    log.warning("sudo asked for a password, but the server names no sudo secret")
                    if pty:
                        # A pty never reports the end of our input; the terminal's EOF
                        # key (^D) ends sudo's password read the same way.
                        chan.sendall(b"\x04")
                    else:
                        chan.shutdown_write()
                else:
                    chan.sendall((secret + "\n").encode())
            if chan.eof_received or chan.closed:
                break
            select.select([chan], [], [], min(remaining, 1.0))
        if not timed_out:
            remaining = deadline - time.monotonic()
            if not chan.status_event.wait(max(remaining, 0)):
                timed_out = True
            _drain(chan, streams)  # EOF came: what is left is finite
    except (paramiko.SSHException, EOFError, OSError) as exc:
        error = _lost(session, command, exc)
    pid = streams["stderr"].filter.pid or streams["stdout"].filter.pid
    exit_code: int | None = None
    if timed_out:
        _stop_remote(session, pid)
        _drain(chan, streams, until=time.monotonic() + 1.0)
        error = CommandTimedOutError(
            f"the command ran longer than its timeout of {timeout:g} s on {target.name}; "
            "svrctl stopped it and every process it started there.",
            host=target.host,
            port=target.port,
            user=target.username,
            command=command,
        )
    elif error is None:
        if chan.exit_status >= 0:
            exit_code = chan.exit_status
        elif not session.transport.is_active():
            error = _lost(session, command, None)
        else:
            error = ChannelClosedError(
                f"the command on {target.name} ended without an exit status "
                "(killed by a signal, or the channel was closed)",
                host=target.host,
                port=target.port,
                user=target.username,
                command=command,
            )
    chan.close()
    for stream in streams.values():
        stream.close()
    out, err = streams["stdout"].buffer.result(), streams["stderr"].buffer.result()
    return CommandResult(
        server=target.name,
        command=command,
        exit_code=exit_code,
        stdout=_mask(out.text, secret),
        stderr=_mask(err.text, secret),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        stdout_bytes=out.total_bytes,
        stderr_bytes=err.total_bytes,
        duration_ms=int((time.monotonic() - started) * 1000),
        timed_out=timed_out,
        error=error,
    )


def _drain(chan: paramiko.Channel, streams: dict[str, _Stream], until: float | None = None) -> None:
    """Read whatever output is already there, without waiting, and stop at ``until``.

    Without the bound, a command printing faster than we consume (or than ``on_line``
    handles) would keep us reading forever, past its timeout.
    """
    while True:
        got = False
        if chan.recv_ready():
            streams["stdout"].feed(chan.recv(_READ_SIZE))
            got = True
        if chan.recv_stderr_ready():
            streams["stderr"].feed(chan.recv_stderr(_READ_SIZE))
            got = True
        if not got or (until is not None and time.monotonic() >= until):
            return


def _lost(session: SshSession, command: str, exc: BaseException | None) -> ChannelClosedError:
    target = session.target
    detail = f" ({exc})" if exc else ""
    return ChannelClosedError(
        f"lost the connection to {target.name} ({target.where}) while the command ran"
        f"{detail}. Check that the server and its sshd are up.",
        host=target.host,
        port=target.port,
        user=target.username,
        command=command,
    )


def _stop_remote(session: SshSession, pid: int | None) -> None:
    """Kill every process of the command's session on the server."""
    if pid is None or not session.transport.is_active():
        return
    try:
        killer = session.transport.open_session(timeout=_KILL_WAIT_SECONDS)
        killer.exec_command(kill_script(pid))
        if not killer.status_event.wait(_KILL_WAIT_SECONDS):
            log.warning("stopping the timed-out command on %s took too long", session.target.name)
        killer.close()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        log.warning("could not stop the timed-out command on %s: %s", session.target.name, exc)
