"""Server inventory: add, edit, remove and look up servers in the app database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from svrctl.db.models import Server, Task
from svrctl.exceptions import BadInputError, ConflictError, NotFoundError
from svrctl.specs import ServerSpec, validate

__all__ = [
    "add_server",
    "get_server",
    "list_servers",
    "remove_server",
    "server_spec",
    "server_to_dict",
    "servers_with_tag",
    "update_server",
]


def get_server(session: Session, name: str) -> Server:
    """Return the server called ``name`` or raise NotFoundError."""
    server = session.scalar(select(Server).where(Server.name == name))
    if server is None:
        raise NotFoundError(f"no server named {name!r}: see `svrctl server list`", field="server")
    return server


def list_servers(session: Session) -> list[Server]:
    """Return every server, by name."""
    return list(session.scalars(select(Server).order_by(Server.name)))


def servers_with_tag(session: Session, tag: str, *, enabled_only: bool = False) -> list[Server]:
    """Return the servers carrying ``tag``, by name."""
    return [
        s
        for s in list_servers(session)
        if tag in (s.tags or []) and (s.enabled or not enabled_only)
    ]


def server_spec(session: Session, server: Server) -> ServerSpec:
    """Return the spec a server row was made from."""
    return ServerSpec.model_validate(
        {
            "name": server.name,
            "host": server.host,
            "port": server.port,
            "username": server.username,
            "key_path": server.key_path,
            "host_key_policy": server.host_key_policy,
            "work_pool": server.work_pool,
            "tags": list(server.tags or []),
            "description": server.description,
            "enabled": server.enabled,
            "jump": _jump_name(session, server),
            "connect_timeout_seconds": server.connect_timeout_seconds,
            "key_passphrase_secret": server.key_passphrase_secret,
            "password_secret": server.password_secret,
            "sudo_password_secret": server.sudo_password_secret,
            "max_concurrent": server.max_concurrent,
        }
    )


def _jump_name(session: Session, server: Server) -> str | None:
    if server.jump_host_id is None:
        return None
    jump = session.get(Server, server.jump_host_id)  # usually already in the identity map
    return jump.name if jump is not None else None


def _apply(session: Session, server: Server, spec: ServerSpec) -> None:
    jump_id: int | None = None
    if spec.jump:
        jump = get_server(session, spec.jump)
        hop: Server | None = jump
        seen = set()
        while hop is not None:
            if hop.id == server.id or hop.id in seen:
                raise BadInputError(
                    f"jump host {spec.jump!r} leads back to {spec.name!r}: jump hosts may "
                    "not form a loop",
                    field="jump",
                )
            seen.add(hop.id)
            hop = session.get(Server, hop.jump_host_id) if hop.jump_host_id else None
        jump_id = jump.id
    server.jump_host_id = jump_id
    server.connect_timeout_seconds = spec.connect_timeout_seconds
    server.key_passphrase_secret = spec.key_passphrase_secret
    server.password_secret = spec.password_secret
    server.sudo_password_secret = spec.sudo_password_secret
    server.max_concurrent = spec.max_concurrent
    server.name = spec.name
    server.host = spec.host
    server.port = spec.port
    server.username = spec.username
    server.key_path = spec.key_path
    server.host_key_policy = spec.host_key_policy.value
    server.work_pool = spec.work_pool
    server.tags = list(spec.tags)
    server.description = spec.description
    server.enabled = spec.enabled


def add_server(session: Session, spec: ServerSpec) -> Server:
    """Insert a new server; its name must be free."""
    if session.scalar(select(Server.id).where(Server.name == spec.name)) is not None:
        raise ConflictError(
            f"a server named {spec.name!r} already exists: pick another name, "
            f"or change it with `svrctl server edit {spec.name}`",
            field="name",
        )
    server = Server()
    _apply(session, server, spec)
    session.add(server)
    session.flush()
    return server


def update_server(session: Session, name: str, changes: dict[str, Any]) -> Server:
    """Apply ``changes`` to the server called ``name``, validating the result as a whole."""
    server = get_server(session, name)
    merged = server_spec(session, server).model_dump() | changes
    spec = validate(ServerSpec, merged)
    if spec.name != server.name and session.scalar(
        select(Server.id).where(Server.name == spec.name)
    ):
        raise ConflictError(f"a server named {spec.name!r} already exists", field="name")
    _apply(session, server, spec)
    session.flush()
    return server


def remove_server(session: Session, name: str) -> None:
    """Delete a server that no task targets."""
    server = get_server(session, name)
    users = list(session.scalars(select(Task.name).where(Task.server_id == server.id)))
    if users:
        raise ConflictError(
            f"server {name!r} is still the target of task(s) {', '.join(sorted(users))}: "
            "remove those tasks or point them at another server first",
            field="server",
        )
    hops = list(session.scalars(select(Server.name).where(Server.jump_host_id == server.id)))
    if hops:
        raise ConflictError(
            f"server {name!r} is the jump host of {', '.join(sorted(hops))}: change their "
            "jump host first (`svrctl server edit NAME --jump OTHER` or `--no-jump`)",
            field="server",
        )
    session.delete(server)
    session.flush()


def server_to_dict(session: Session, server: Server) -> dict[str, Any]:
    """Return a server as plain JSON-ready data (secrets by block name only)."""
    return {
        "id": server.id,
        "name": server.name,
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "key_path": server.key_path,
        "host_key_policy": server.host_key_policy,
        "work_pool": server.work_pool,
        "tags": list(server.tags or []),
        "description": server.description,
        "enabled": server.enabled,
        "os_type": server.os_type,
        "os_version": server.os_version,
        "last_seen": server.last_seen.isoformat() if server.last_seen else None,
        "jump": _jump_name(session, server),
        "connect_timeout_seconds": server.connect_timeout_seconds,
        "key_passphrase_secret": server.key_passphrase_secret,
        "password_secret": server.password_secret,
        "sudo_password_secret": server.sudo_password_secret,
        "max_concurrent": server.max_concurrent,
        "created": server.created.isoformat() if server.created else None,
        "updated": server.updated.isoformat() if server.updated else None,
    }
