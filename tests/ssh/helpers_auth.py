"""Helpers for the SSH tests (auth, trust, connectivity, CLI, exec; real sshd on loopback).

Every target built here uses a known_hosts file in the test's tmp dir, no user
known_hosts file (``~/.ssh`` is never read or written) and a key dir of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from click.testing import CliRunner, Result
from fixtures.sshd import SshdTarget, free_port

from svrctl.ssh.target import SshTarget

__all__ = [
    "BackgroundThread",
    "SilentListener",
    "bare_target",
    "cli",
    "closed_port",
    "copy_key",
    "is_root",
    "json_out",
    "log_lines",
    "make_target",
    "pin",
    "ssh_keygen_fingerprint",
    "wait_for_log",
]


def pin(sshd: SshdTarget, known_hosts: Path) -> Path:
    """Append the sshd's current host key line to ``known_hosts`` (created 0600)."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with known_hosts.open("a") as handle:
        handle.write(sshd.host_key_line + "\n")
    known_hosts.chmod(0o600)
    return known_hosts


def make_target(
    sshd: SshdTarget, tmp_path: Path, *, name: str = "target", **changes: Any
) -> SshTarget:
    """Return a target for ``sshd`` using its user key, with private trust files.

    The known_hosts file is ``tmp_path/known_hosts`` (not written here: use :func:`pin`),
    the key dir an empty folder; ``changes`` override any field.
    """
    key_dir = tmp_path / "no-keys"
    key_dir.mkdir(exist_ok=True)
    target = SshTarget(
        name=name,
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_path=sshd.user_key,
        key_dir=key_dir,
        known_hosts=tmp_path / "known_hosts",
        user_known_hosts=None,
        connect_timeout=5.0,
        banner_timeout=5.0,
        auth_timeout=5.0,
    )
    return target.with_changes(**changes) if changes else target


def bare_target(
    tmp_path: Path, host: str, port: int, *, name: str = "bare", **changes: Any
) -> SshTarget:
    """Return a target for any address, with private (empty) trust files and key dir."""
    key_dir = tmp_path / "no-keys"
    key_dir.mkdir(exist_ok=True)
    target = SshTarget(
        name=name,
        host=host,
        port=port,
        username="nobody",
        key_dir=key_dir,
        known_hosts=tmp_path / "known_hosts",
        user_known_hosts=None,
    )
    return target.with_changes(**changes) if changes else target


def copy_key(source: Path, dest: Path, mode: int = 0o600) -> Path:
    """Copy a private key (and its .pub) to ``dest`` with ``mode``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    dest.chmod(mode)
    pub = source.with_name(source.name + ".pub")
    if pub.exists():
        shutil.copyfile(pub, dest.with_name(dest.name + ".pub"))
    return dest


def ssh_keygen_fingerprint(public_key: Path) -> str:
    """Return ``SHA256:...`` of a public key file, computed by ssh-keygen (not by svrctl)."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fingerprint = out.split()[1]
    assert fingerprint.startswith("SHA256:"), out
    return fingerprint


def closed_port() -> int:
    """Return a loopback port nothing listens on (it was free a moment ago)."""
    return free_port()


def log_lines(sshd: SshdTarget, needle: str) -> list[str]:
    """Return the sshd log lines containing ``needle``."""
    return [line for line in sshd.log_text().splitlines() if needle in line]


def wait_for_log(sshd: SshdTarget, needle: str, timeout: float = 5.0) -> list[str]:
    """Wait until the sshd log has a line containing ``needle``; return all such lines.

    sshd's privileged monitor writes some lines a moment after the client sees the
    outcome, so a test polls for them rather than reading the log once.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = log_lines(sshd, needle)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def cli(*args: str, input: str | None = None) -> Result:
    """Run ``svrctl ARGS`` in-process with optional stdin (the env comes from svrctl_env)."""
    from svrctl.cli import cli as svrctl_cli

    return CliRunner().invoke(
        svrctl_cli, list(args), input=input, prog_name="svrctl", catch_exceptions=False
    )


def json_out(result: Result) -> Any:
    """Parse a command's stdout as JSON."""
    return json.loads(result.stdout)


class BackgroundThread:
    """A context manager that runs :meth:`_run` in a daemon thread while the block runs.

    ``_run`` should return soon after ``self._stop`` is set. On exit the thread is
    told to stop and joined (for at most ``join_timeout`` seconds), then
    :meth:`_close` releases what it used.
    """

    join_timeout = 5.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release resources after the thread has been joined (nothing by default)."""

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self.join_timeout)
        self._close()


class SilentListener(BackgroundThread):
    """A TCP listener on 127.0.0.1 that accepts connections and never sends a byte.

    With ``hang_up`` it instead sends ``greeting`` (if any) and closes each
    connection at once, as an overloaded or misconfigured server does.
    """

    def __init__(self, *, hang_up: bool = False, greeting: bytes = b"") -> None:
        super().__init__()
        self.hang_up = hang_up
        self.greeting = greeting
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)
            if self.hang_up:
                if self.greeting:
                    conn.sendall(self.greeting)
                conn.close()

    def _close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def is_root() -> bool:
    """Tell whether the tests run as root."""
    return os.geteuid() == 0
