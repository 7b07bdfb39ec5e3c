"""A CommandRunner for the worker's own host, built on prefect-shell's ShellOperation."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import IO, Any

from svrctl.commands import CommandResult, LineCallback
from svrctl.exceptions import SvrctlError
from svrctl.ssh.output import BoundedBuffer, LineSplitter

__all__ = ["LocalRunner", "local_host_name"]

_READ_SIZE = 64 * 1024


def local_host_name() -> str:
    """Return this host's name as history rows record it."""
    return socket.gethostname()[:64] or "localhost"


class LocalTimeoutError(SvrctlError):
    """A local command ran past its timeout and was killed with all its processes."""


class LocalRunner:
    """Runs commands with bash on this host; a timeout kills the whole process tree."""

    def __init__(self, *, output_limit: int, name: str | None = None) -> None:
        self.name = name or local_host_name()
        self.output_limit = output_limit

    def run(
        self, command: str, *, timeout: float, on_line: LineCallback | None = None
    ) -> CommandResult:
        """Run ``command`` with bash; stream its lines; kill it all on timeout."""
        from prefect_shell import ShellOperation

        started = time.monotonic()
        buffers = {
            "stdout": BoundedBuffer(self.output_limit),
            "stderr": BoundedBuffer(self.output_limit),
        }
        splitters: dict[str, LineSplitter] = {}
        if on_line is not None:
            for stream in buffers:
                splitters[stream] = LineSplitter(_bind(on_line, stream))
        timed_out = False
        with ShellOperation(commands=[command], stream_output=False) as operation:
            shell = operation.trigger(_sync=True)
            # ShellOperation starts bash in a new session with piped output; svrctl
            # reads the pipes itself to keep output bounded and enforce the deadline.
            process: subprocess.Popen[bytes] = shell._process
            timed_out = not _pump(process, buffers, splitters, started + timeout)
            if timed_out:
                _kill_tree(process)
            process.wait()
        for splitter in splitters.values():
            splitter.close()
        out, err = buffers["stdout"].result(), buffers["stderr"].result()
        code = process.returncode
        return CommandResult(
            server=self.name,
            command=command,
            exit_code=None if timed_out else (code if code >= 0 else 128 - code),
            stdout=out.text,
            stderr=err.text,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            stdout_bytes=out.total_bytes,
            stderr_bytes=err.total_bytes,
            duration_ms=int((time.monotonic() - started) * 1000),
            timed_out=timed_out,
            error=LocalTimeoutError(
                f"the command ran longer than its timeout of {timeout:g} s on {self.name}; "
                "svrctl killed it and every process it started."
            )
            if timed_out
            else None,
        )


def _bind(on_line: LineCallback, stream: str) -> Callable[[str], None]:
    """Return a one-argument line callback for ``stream``."""

    def emit(line: str) -> None:
        on_line(stream, line)

    return emit


def _pump(
    process: subprocess.Popen[bytes],
    buffers: dict[str, BoundedBuffer],
    splitters: dict[str, LineSplitter],
    deadline: float,
) -> bool:
    """Copy output into the buffers until both pipes close; False if the deadline passed."""
    selector = selectors.DefaultSelector()
    pipes: dict[str, IO[bytes] | None] = {"stdout": process.stdout, "stderr": process.stderr}
    for name, pipe in pipes.items():
        if pipe is not None:
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, selectors.EVENT_READ, name)
    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in selector.select(min(remaining, 1.0)):
                data = os.read(key.fd, _READ_SIZE)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                buffers[key.data].write(data)
                if key.data in splitters:
                    splitters[key.data].feed(data)
        remaining = deadline - time.monotonic()
        try:
            process.wait(timeout=max(remaining, 0))
        except subprocess.TimeoutExpired:
            return False
        return True
    finally:
        selector.close()


def _kill_tree(process: subprocess.Popen[Any]) -> None:
    """Kill the command's session and every descendant; bash leads its own session."""
    from svrctl.ssh.remote import kill_script

    subprocess.run(["/bin/sh", "-c", kill_script(process.pid)], check=False, timeout=15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
