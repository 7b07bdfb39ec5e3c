"""One command on many servers at once, with a bound, and a result per server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from svrctl.exceptions import SshError
from svrctl.ssh.connection import connect
from svrctl.ssh.exec import CommandResult
from svrctl.ssh.target import SshTarget

__all__ = ["DEFAULT_PARALLEL", "HostOutcome", "run_command", "run_on_many"]

DEFAULT_PARALLEL = 10


@dataclass
class HostOutcome:
    """The result of a command on one server, or why it could not run there."""

    target: SshTarget
    result: CommandResult | None = None
    error: SshError | None = None

    @property
    def success(self) -> bool:
        """True when the command ran and succeeded."""
        return self.result is not None and self.result.success


def run_command(
    target: SshTarget,
    command: str,
    *,
    timeout: float,
    output_limit: int = 1024 * 1024,
    on_line: Callable[[str, str], None] | None = None,
    pty: bool = False,
) -> CommandResult:
    """Connect, run one command, and close the connection."""
    with connect(target) as session:
        return session.run(
            command, timeout=timeout, output_limit=output_limit, on_line=on_line, pty=pty
        )


def run_on_many(
    targets: Sequence[SshTarget],
    command: str,
    *,
    timeout: float,
    max_parallel: int = DEFAULT_PARALLEL,
    output_limit: int = 1024 * 1024,
    on_line: Callable[[SshTarget, str, str], None] | None = None,
    pty: bool = False,
) -> list[HostOutcome]:
    """Run ``command`` on every target, at most ``max_parallel`` at a time, in input order.

    A server that cannot be reached or refuses us gets an outcome with ``error``;
    the others go on.
    """

    def one(target: SshTarget) -> HostOutcome:
        line_cb = None
        if on_line is not None:

            def line_cb(stream: str, line: str) -> None:
                on_line(target, stream, line)

        try:
            result = run_command(
                target,
                command,
                timeout=timeout,
                output_limit=output_limit,
                on_line=line_cb,
                pty=pty,
            )
        except SshError as exc:
            return HostOutcome(target, error=exc)
        return HostOutcome(target, result=result)

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(targets)))) as pool:
        return list(pool.map(one, targets))
