"""The one seam for running a command: a result type and the runner protocol.

Flows and plugins depend on :class:`CommandRunner`, never on paramiko or
subprocess directly; the SSH engine and the local runner implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from svrctl.exceptions import SvrctlError

__all__ = ["CommandResult", "CommandRunner", "LineCallback"]

# Called with (stream, line) for each line of output as it arrives.
LineCallback = Callable[[str, str], None]


@dataclass
class CommandResult:
    """What one command did on one host."""

    server: str
    command: str
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    duration_ms: int
    timed_out: bool = False
    error: SvrctlError | None = field(default=None, repr=False)

    @property
    def success(self) -> bool:
        """True when the command exited 0 within its timeout."""
        return self.exit_code == 0 and not self.timed_out and self.error is None

    @property
    def status(self) -> str:
        """Return ``success``, ``failed`` or ``timed_out``."""
        if self.timed_out:
            return "timed_out"
        return "success" if self.success else "failed"

    @property
    def error_text(self) -> str | None:
        """Return the reason for a failure in one message, or None on success."""
        if self.error is not None:
            return self.error.message
        if self.exit_code not in (0, None):
            last = next((ln for ln in reversed(self.stderr.splitlines()) if ln.strip()), "")
            return f"exit code {self.exit_code}" + (f": {last.strip()}" if last else "")
        return None


class CommandRunner(Protocol):
    """Runs shell commands on one host: a server over SSH, or the worker's own host."""

    name: str

    def run(
        self,
        command: str,
        *,
        timeout: float,
        on_line: LineCallback | None = None,
    ) -> CommandResult:
        """Run ``command`` and return its result; a timeout stops all it started."""
        ...
