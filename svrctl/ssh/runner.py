"""A CommandRunner for one server over SSH: connect, run, close, errors as results."""

from __future__ import annotations

import time

from svrctl.commands import CommandResult, LineCallback
from svrctl.exceptions import ChannelClosedError, SshError
from svrctl.ssh.pool import ConnectionPool, default_pool
from svrctl.ssh.target import SshTarget

__all__ = ["SshRunner"]


class SshRunner:
    """Runs commands on one server; a connection failure becomes a failed result."""

    def __init__(
        self,
        target: SshTarget,
        *,
        output_limit: int,
        pty: bool = False,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.target = target
        self.name = target.name
        self.output_limit = output_limit
        self.pty = pty
        self.pool = pool or default_pool

    def run(
        self, command: str, *, timeout: float, on_line: LineCallback | None = None
    ) -> CommandResult:
        """Run ``command`` within ``timeout`` seconds in all, on a pooled or new connection."""
        started = time.monotonic()
        try:
            for fresh in (False, True):
                with self.pool.session(self.target, fresh=fresh) as session:
                    left = max(timeout - (time.monotonic() - started), 1.0)
                    try:
                        return session.run(
                            command,
                            timeout=left,
                            output_limit=self.output_limit,
                            on_line=on_line,
                            pty=self.pty,
                        )
                    except ChannelClosedError:
                        # No channel could be opened, so the command never started:
                        # a reused connection went stale. Try once on a new one.
                        if fresh:
                            raise
                        session.transport.close()
            raise AssertionError("unreachable")  # pragma: no cover
        except SshError as exc:
            return CommandResult(
                server=self.name,
                command=command,
                exit_code=None,
                stdout="",
                stderr="",
                stdout_truncated=False,
                stderr_truncated=False,
                stdout_bytes=0,
                stderr_bytes=0,
                duration_ms=int((time.monotonic() - started) * 1000),
                error=exc,
            )
