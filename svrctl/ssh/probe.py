"""The connection test: connect, run a harmless command, read the OS, time it all."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from svrctl.exceptions import SshError
from svrctl.ssh.connection import connect
from svrctl.ssh.hostkeys import fingerprint
from svrctl.ssh.target import SshTarget

__all__ = ["ConnectionReport", "parse_os", "test_connection"]

log = logging.getLogger("svrctl.ssh")

PROBE_COMMAND = "cat /etc/os-release 2>/dev/null; echo '--svrctl-uname--'; uname -srm"


@dataclass
class ConnectionReport:
    """What a connection test found."""

    server: str
    where: str
    connect_ms: int
    command_ms: int
    auth: str
    host_key: str
    os_type: str | None
    os_version: str | None
    kernel: str | None


def parse_os(text: str) -> tuple[str | None, str | None, str | None]:
    """Read (os type, os version, kernel) from os-release text followed by ``uname -srm``."""
    release, _, uname = text.partition("--svrctl-uname--")
    fields: dict[str, str] = {}
    for line in release.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    kernel = uname.strip() or None
    os_type = fields.get("ID") or (kernel.split()[0].lower() if kernel else None)
    os_version = fields.get("VERSION_ID") or fields.get("VERSION") or fields.get("BUILD_ID")
    if os_version is None and kernel:
        parts = kernel.split()
        os_version = parts[1] if len(parts) > 1 else None
    return os_type, os_version, kernel


def test_connection(target: SshTarget, *, timeout: float = 10.0) -> ConnectionReport:
    """Connect to the target and run the probe command; raise SshError on failure."""
    log.info("Testing SSH connection to %s", target.where)
    started = time.monotonic()
    with connect(target) as session:
        connected = time.monotonic()
        result = session.run(PROBE_COMMAND, timeout=timeout)
        done = time.monotonic()
        if not result.success:
            detail = result.error or f"exit code {result.exit_code}: {result.stderr.strip()}"
            raise SshError(
                f"connected to {target.where}, but the test command failed: {detail}",
                host=target.host,
                port=target.port,
                user=target.username,
                command=PROBE_COMMAND,
            )
        os_type, os_version, kernel = parse_os(result.stdout)
        key = session.transport.get_remote_server_key()
        return ConnectionReport(
            server=target.name,
            where=target.where,
            connect_ms=int((connected - started) * 1000),
            command_ms=int((done - connected) * 1000),
            auth=session.auth_method,
            host_key=f"{key.get_name()} {fingerprint(key)}",
            os_type=os_type,
            os_version=os_version,
            kernel=kernel,
        )


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
