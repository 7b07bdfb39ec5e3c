"""Where and how to connect: one SSH target, built from a server row and the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from svrctl.db.models import HostKeyPolicy, Server

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from svrctl.settings import Settings

__all__ = ["SecretResolver", "SshTarget", "target_for_server"]

# Resolves the name of a Prefect Secret block to its value.
SecretResolver = Callable[[str], str]


@dataclass(frozen=True)
class SshTarget:
    """Everything needed to open an SSH connection to one server."""

    name: str
    host: str
    port: int = 22
    username: str = "root"
    key_path: Path | None = None
    key_dir: Path = field(default_factory=lambda: Path.home() / ".ssh")
    host_key_policy: HostKeyPolicy = HostKeyPolicy.STRICT
    known_hosts: Path | None = None
    user_known_hosts: Path | None = field(
        default_factory=lambda: Path.home() / ".ssh" / "known_hosts"
    )
    connect_timeout: float = 10.0
    banner_timeout: float = 10.0
    auth_timeout: float = 10.0
    passphrase: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sudo_password: str | None = field(default=None, repr=False)
    jump: SshTarget | None = None

    @property
    def where(self) -> str:
        """Return ``user@host:port``."""
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """Return the host as known_hosts files name it: ``host`` or ``[host]:port``."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def with_changes(self, **changes: object) -> SshTarget:
        """Return a copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def target_for_server(
    session: Session,
    server: Server,
    settings: Settings,
    secrets: SecretResolver | None = None,
) -> SshTarget:
    """Build the SSH target of a server row, its jump hosts included, resolving its secrets."""
    from svrctl.secrets import prefect_secret

    resolve = secrets or prefect_secret
    jump = None
    if server.jump_host_id is not None:
        hop = session.get(Server, server.jump_host_id)
        if hop is not None:
            jump = target_for_server(session, hop, settings, resolve)

    def secret(name: str | None) -> str | None:
        return resolve(name) if name else None

    return SshTarget(
        name=server.name,
        host=server.host,
        port=server.port,
        username=server.username,
        key_path=Path(server.key_path).expanduser() if server.key_path else None,
        key_dir=settings.ssh_key_dir,
        host_key_policy=HostKeyPolicy(server.host_key_policy),
        known_hosts=settings.home / "known_hosts",
        user_known_hosts=Path.home() / ".ssh" / "known_hosts",
        connect_timeout=float(server.connect_timeout_seconds),
        banner_timeout=float(server.connect_timeout_seconds),
        auth_timeout=float(server.connect_timeout_seconds),
        passphrase=secret(server.key_passphrase_secret),
        password=secret(server.password_secret),
        sudo_password=secret(server.sudo_password_secret),
        jump=jump,
    )
