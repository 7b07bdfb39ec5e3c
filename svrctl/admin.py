"""What the CLI and the admin flows both do to servers, tasks and channels: one code path.

Each function here is the body of a ``svrctl server|task|notify`` command: it
validates, changes the app database, syncs what the change touches in Prefect and
returns plain data. The click commands print that data; the admin flows
(``svrctl.flows.admin``) log it and show it as a markdown artifact. Refusals are
:mod:`svrctl.exceptions` errors with the same messages on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from svrctl.db.engine import Database
from svrctl.exceptions import BadInputError
from svrctl.settings import Settings

if TYPE_CHECKING:
    import paramiko

    from svrctl.notify import DeliveryResult
    from svrctl.ssh.probe import ConnectionReport
    from svrctl.ssh.target import SshTarget
    from svrctl.sync import Scope, SyncReport

__all__ = [
    "Feedback",
    "HostKeyOffer",
    "add_server_entry",
    "add_task_entry",
    "configure_plugin_task",
    "default_secret_block",
    "edit_server_entry",
    "edit_task_entry",
    "host_key_offer",
    "max_concurrent_value",
    "pin_offer",
    "remove_server_entry",
    "remove_task_entry",
    "server_changes",
    "set_task_enabled",
    "sync_change",
    "task_changes",
    "test_channel",
    "test_server",
]


def _ignore() -> None:
    """Do nothing (the default hook before a sync)."""


@dataclass(frozen=True)
class Feedback:
    """Where the side remarks of a change go (the CLI's stderr, or a flow run's log).

    Attributes:
        warn: Called with each warning, such as a sync that could not reach Prefect.
        before_sync: Called once right before Prefect is written to.
    """

    warn: Callable[[str], None]
    before_sync: Callable[[], None] = _ignore


# ----------------------------------------------------------------------------- sync


def sync_change(
    db: Database,
    settings: Settings,
    scope: Scope,
    *,
    what: str,
    schedule_waits: bool,
    feedback: Feedback,
) -> SyncReport | None:
    """Sync the deployments one change touched, if a Prefect API answers; else say so.

    The change is already saved in the app database; a failed sync never undoes it.

    Args:
        db: The app database.
        settings: svrctl's settings.
        scope: The tasks and servers the change touched.
        what: What changed, for messages ("task backup").
        schedule_waits: True when an enabled schedule waits for the sync, so the
            missing Prefect API is worth a note even when none is configured at all.
        feedback: Where warnings go.

    Returns:
        The sync report, or None when nothing was synced.
    """
    from svrctl.sync import find_api
    from svrctl.sync import sync as run_sync

    warn = feedback.warn
    target = find_api(settings)
    if target.url is None:
        if target.configured:
            warn(
                f"warning: Prefect was not updated: {target.problem}. The change to {what} is "
                "saved in svrctl's database; run `svrctl sync` once Prefect is reachable."
            )
        elif schedule_waits:
            warn(
                f"note: {what} is saved, but {target.problem}, so its schedule does not run "
                "yet; run `svrctl sync` once Prefect runs."
            )
        return None
    feedback.before_sync()
    try:
        report = run_sync(db, target.url, scope=scope)
    except Exception as exc:  # Prefect went away mid-sync, or answered with an error
        warn(
            f"warning: Prefect was not updated ({type(exc).__name__}: {exc}). The change to "
            f"{what} is saved in svrctl's database; run `svrctl sync` to retry."
        )
        return None
    for problem in report.problems:
        warn(f"warning: {problem}")
    for action in report.failed:
        warn(f"warning: Prefect was not fully updated: {action.line()}")
    if not report.ok:
        warn("  the change is saved in svrctl's database; run `svrctl sync` to retry.")
    return report


# ----------------------------------------------------------------------------- servers


def max_concurrent_value(value: str | int | None) -> int | None:
    """Read a max-concurrent value: a number of runs; '', 0, 'off' or None mean no limit."""
    if value is None or isinstance(value, int):
        return value or None
    text = value.strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise BadInputError(
            f"invalid max_concurrent (--max-concurrent): {value!r} is not a whole number "
            "of runs (use '' or 0 to remove the limit)",
            field="max_concurrent",
        ) from None


def server_changes(**options: Any) -> dict[str, Any]:
    """Keep the server fields that were given (None and empty tuples mean "not given")."""
    out = {k: v for k, v in options.items() if v is not None and v != ()}
    if "tags" in out:
        out["tags"] = list(out["tags"])
    if "max_concurrent" in out:
        out["max_concurrent"] = max_concurrent_value(out["max_concurrent"])
    return out


def sync_server(
    db: Database,
    settings: Settings,
    name: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    feedback: Feedback,
) -> None:
    """Sync what a server change touches in Prefect: its limit, its tasks' deployments.

    Args:
        db: The app database.
        settings: svrctl's settings.
        name: The server's name.
        before: The server as it was (None for a new server).
        after: The server as it is now (None once removed).
        feedback: Where warnings go.
    """
    from sqlalchemy import or_, select

    from svrctl.db.models import Task
    from svrctl.sync import Scope

    rows = [d for d in (before, after) if d is not None]
    tags = {t for d in rows for t in d["tags"]}
    ids = {d["id"] for d in rows}
    with db.read() as session:
        tasks = list(
            session.execute(
                select(Task.id, Task.name, Task.deployment_id).where(
                    or_(Task.server_id.in_(ids), Task.server_tag.in_(tags))
                )
            )
        )
    limited = any(d.get("max_concurrent") for d in rows)
    if not tasks and not limited:
        return
    scope = Scope(
        task_ids=frozenset(t.id for t in tasks),
        names=frozenset(t.name for t in tasks),
        deployment_ids=frozenset(t.deployment_id for t in tasks if t.deployment_id),
        servers=frozenset({name}) if limited else frozenset(),
    )
    sync_change(db, settings, scope, what=f"server {name}", schedule_waits=False, feedback=feedback)


def add_server_entry(
    db: Database,
    settings: Settings,
    fields: dict[str, Any],
    feedback: Feedback,
    *,
    secrets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Validate and add a server, store its secrets, sync; return it as data.

    Args:
        db: The app database.
        settings: svrctl's settings.
        fields: The server's fields (``ServerSpec``).
        feedback: Where warnings go.
        secrets: Secret values by the spec field naming their block (for example
            ``sudo_password_secret``); each is saved as that Prefect Secret block once
            the server is known to be valid and free, before the row is committed.
    """
    from svrctl.servers import add_server, server_to_dict
    from svrctl.specs import ServerSpec, validate

    fields = dict(fields)
    for key in secrets or {}:
        fields.setdefault(key, None)
        fields[key] = fields[key] or default_secret_block(str(fields.get("name", "")), key)
    spec = validate(ServerSpec, fields)
    with db.write() as session:
        data = server_to_dict(session, add_server(session, spec))
        _save_secrets(data, secrets)
    sync_server(db, settings, spec.name, None, data, feedback)
    return data


def edit_server_entry(
    db: Database,
    settings: Settings,
    name: str,
    changes: dict[str, Any],
    feedback: Feedback,
    *,
    secrets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Change a server (fields not in ``changes`` stay), store new secrets, sync; return it."""
    from svrctl.servers import get_server, server_to_dict, update_server

    changes = dict(changes)
    with db.write() as session:
        before = server_to_dict(session, get_server(session, name))
        for key in secrets or {}:
            new_name = str(changes.get("name") or name)
            changes[key] = changes.get(key) or before[key] or default_secret_block(new_name, key)
        data = server_to_dict(session, update_server(session, name, changes))
        _save_secrets(data, secrets)
    keys = ("name", "work_pool", "tags", "enabled", "max_concurrent")
    if any(before[k] != data[k] for k in keys):
        sync_server(db, settings, name, before, data, feedback)
    return data


def remove_server_entry(
    db: Database, settings: Settings, name: str, feedback: Feedback
) -> dict[str, Any]:
    """Remove a server that no task targets, sync; return it as it was."""
    from svrctl.servers import get_server, remove_server, server_to_dict

    with db.write() as session:
        before = server_to_dict(session, get_server(session, name))
        remove_server(session, name)
    sync_server(db, settings, name, before, None, feedback)
    from svrctl.blocks_sync import forget_block  # its svrctl-server block, docs/blocks.md

    forget_block(settings, "server", name, feedback.warn)
    return before


def default_secret_block(server: str, field: str) -> str:
    """Return the Secret block name a server's secret gets when none is named."""
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", server.lower()).strip("-") or "server"
    kind = field.removesuffix("_secret").replace("_", "-")
    return f"svrctl-server-{slug}-{kind}"[:63].rstrip("-")


def _save_secrets(data: dict[str, Any], secrets: dict[str, str] | None) -> None:
    """Save each secret value into the Prefect Secret block the server names for it."""
    from svrctl.secrets import save_prefect_secret

    for key, value in (secrets or {}).items():
        save_prefect_secret(str(data[key]), value)


def _target(db: Database, settings: Settings, name: str) -> SshTarget:
    from svrctl.servers import get_server
    from svrctl.ssh.target import target_for_server

    with db.read() as session:
        return target_for_server(session, get_server(session, name), settings)


def test_server(
    db: Database, settings: Settings, name: str, timeout: float = 10.0
) -> ConnectionReport:
    """Connect, run a harmless command, remember the OS and the time; return the report.

    Raises:
        SshError: The server could not be reached or refused the login.
    """
    from svrctl.db.models import utcnow
    from svrctl.servers import get_server
    from svrctl.ssh.probe import test_connection

    report = test_connection(_target(db, settings, name), timeout=timeout)
    with db.write() as session:
        row = get_server(session, name)
        row.os_type, row.os_version, row.last_seen = report.os_type, report.os_version, utcnow()
    return report


@dataclass(frozen=True)
class HostKeyOffer:
    """The host key a server presents, and what is pinned for it now.

    Attributes:
        server: The server's name.
        where: The name the key is pinned under (``[host]:port``).
        key_type: The presented key's type, such as ``ssh-ed25519``.
        fingerprint: Its SHA256 fingerprint.
        trusted: True when exactly this key is pinned already.
        replaces: The pinned keys it would replace ("type fingerprint, ..."), or "".
    """

    server: str
    where: str
    key_type: str
    fingerprint: str
    trusted: bool
    replaces: str
    target: SshTarget
    key: paramiko.PKey


def host_key_offer(db: Database, settings: Settings, name: str) -> HostKeyOffer:
    """Fetch a server's host key and compare it with the pinned ones."""
    from svrctl.ssh.connection import fetch_host_key
    from svrctl.ssh.hostkeys import fingerprint, known_keys

    target = _target(db, settings, name)
    key = fetch_host_key(target)
    known = known_keys(target)
    pinned = known.get(key.get_name())
    trusted = pinned is not None and pinned == key
    replaces = "" if trusted else ", ".join(f"{kt} {fingerprint(k)}" for kt, k in known.items())
    return HostKeyOffer(
        server=name,
        where=target.known_hosts_name,
        key_type=key.get_name(),
        fingerprint=fingerprint(key),
        trusted=trusted,
        replaces=replaces,
        target=target,
        key=key,
    )


def pin_offer(offer: HostKeyOffer) -> tuple[str, str]:
    """Pin an offered key (replacing older pins); return the state and the file's path."""
    from svrctl.ssh.hostkeys import pin_host_key

    if offer.trusted:
        return "already-trusted", str(offer.target.known_hosts or "")
    path = pin_host_key(offer.target, offer.key, replace=bool(offer.replaces))
    return ("replaced" if offer.replaces else "pinned"), str(path)


# ----------------------------------------------------------------------------- tasks


def task_changes(fields: dict[str, Any]) -> dict[str, Any]:
    """Keep the task fields that were given; a remind interval of 0 means never.

    Unchaining (``after`` = '') drops the chain's condition too.
    """
    out = {k: v for k, v in fields.items() if v is not None and k != "notify_remind_hours"}
    if fields.get("notify_remind_hours") is not None:
        hours = fields["notify_remind_hours"]
        out["notify_remind_hours"] = None if hours == 0 else hours
    if out.get("after") == "" and "after_on" not in out:
        out["after_on"] = None
    return out


def _sync_task(
    db: Database,
    settings: Settings,
    data: dict[str, Any],
    *,
    names: set[str],
    deployment_id: str | None,
    feedback: Feedback,
) -> None:
    """Sync one task's deployment after a change; put its new deployment id into ``data``."""
    from svrctl.sync import Scope

    scope = Scope(
        task_ids=frozenset({data["id"]}),
        names=frozenset(names),
        deployment_ids=frozenset({deployment_id} if deployment_id else ()),
    )
    waits = bool(data.get("schedule")) and bool(data.get("enabled"))
    report = sync_change(
        db, settings, scope, what=f"task {data['name']}", schedule_waits=waits, feedback=feedback
    )
    if report is not None and data["name"] in report.deployment_ids:
        data["deployment_id"] = report.deployment_ids[data["name"]]


def add_task_entry(
    db: Database, settings: Settings, fields: dict[str, Any], feedback: Feedback
) -> dict[str, Any]:
    """Validate and add a task (time zone: SVRCTL_TIMEZONE unless given), sync; return it."""
    from svrctl.specs import TaskSpec, validate
    from svrctl.tasks import add_task, task_to_dict

    spec = validate(TaskSpec, {"timezone": settings.timezone} | fields)
    with db.write() as session:
        row = add_task(session, spec)
        data = task_to_dict(row, spec.server, spec.after)
    _sync_task(db, settings, data, names={spec.name}, deployment_id=None, feedback=feedback)
    return data


def _edit(
    db: Database,
    name: str,
    changes: dict[str, Any] | Callable[[str | None], dict[str, Any]],
) -> tuple[dict[str, Any], str | None]:
    """Apply changes (or changes worked out from the current kind) to a task."""
    from sqlalchemy import select

    from svrctl.db.models import Server
    from svrctl.tasks import get_task, task_name_of, task_to_dict, update_task

    with db.write() as session:
        current = get_task(session, name)
        deployment_id = current.deployment_id
        wanted = changes(current.kind) if callable(changes) else changes
        row = update_task(session, name, wanted)
        server = session.scalar(select(Server.name).where(Server.id == row.server_id))
        data = task_to_dict(row, server, task_name_of(session, row.after_task_id))
    return data, deployment_id


def edit_task_entry(
    db: Database,
    settings: Settings,
    name: str,
    changes: dict[str, Any] | Callable[[str | None], dict[str, Any]],
    feedback: Feedback,
) -> dict[str, Any]:
    """Change a task (fields not given stay), sync its deployment; return it.

    ``changes`` may be a function of the task's current kind (the CLI works out
    what ``--server`` means from it).
    """
    data, deployment_id = _edit(db, name, changes)
    _sync_task(
        db,
        settings,
        data,
        names={name, data["name"]},
        deployment_id=deployment_id,
        feedback=feedback,
    )
    return data


def remove_task_entry(db: Database, settings: Settings, name: str, feedback: Feedback) -> None:
    """Remove a task and its history, and its deployment."""
    from svrctl.tasks import get_task, remove_task

    with db.write() as session:
        row = get_task(session, name)
        data = {"id": row.id, "name": name, "schedule": "", "enabled": False}
        deployment_id = row.deployment_id
        remove_task(session, name)
    _sync_task(db, settings, data, names={name}, deployment_id=deployment_id, feedback=feedback)


def set_task_enabled(
    db: Database, settings: Settings, name: str, enabled: bool, feedback: Feedback
) -> None:
    """Enable or disable a task, and its deployment's schedule."""
    from svrctl.tasks import set_enabled

    with db.write() as session:
        row = set_enabled(session, name, enabled)
        data = {"id": row.id, "name": name, "schedule": row.schedule, "enabled": enabled}
        deployment_id = row.deployment_id
    _sync_task(db, settings, data, names={name}, deployment_id=deployment_id, feedback=feedback)


# ----------------------------------------------------------------------------- channels


def test_channel(db: Database, settings: Settings, name: str) -> DeliveryResult:
    """Send a test message to a notification channel; return the delivery's result."""
    import socket

    from svrctl.notify import Event, Notice
    from svrctl.notify.channels import ChannelInfo, get_channel
    from svrctl.notify.deliver import deliver_to

    with db.read() as session:
        channel = ChannelInfo.of(get_channel(session, name))
    notice = Notice(
        event=Event.TEST,
        title="svrctl test notification",
        body=f"Channel **{name}** works: this is a test message from svrctl on "
        f"`{socket.gethostname()}`.",
        priority=5,
    )
    (result,) = deliver_to(db, settings, notice, [channel])
    return result


# ----------------------------------------------------------------------------- plugins


def configure_plugin_task(
    db: Database,
    settings: Settings,
    fields: dict[str, Any],
    feedback: Feedback,
    *,
    secret: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create or update the task that runs a plugin, and its deployment, in one step.

    Args:
        db: The app database.
        settings: svrctl's settings.
        fields: Task fields: ``name``, ``plugin``, ``plugin_config``, ``server``,
            ``schedule``, ``timezone``, ``enabled``, ``description`` (None: not given).
        feedback: Where warnings go.
        secret: A value for the Secret block the plugin's config names (its one
            setting ending in ``_secret``); saved once the config is valid.

    Returns:
        The task as data, and True when it was created.
    """
    from sqlalchemy import select

    from svrctl.db.models import Task
    from svrctl.plugin import get_plugin, validate_config

    fields = {k: v for k, v in fields.items() if v is not None}
    plugin = get_plugin(str(fields.get("plugin") or ""))
    config = validate_config(plugin, fields.get("plugin_config"))
    if secret:
        _save_plugin_secret(plugin.name, config, secret)
    with db.read() as session:
        exists = session.scalar(select(Task.id).where(Task.name == fields.get("name"))) is not None
    if not exists:
        return add_task_entry(db, settings, {"kind": "plugin"} | fields, feedback), True
    name = str(fields.pop("name"))
    plugin_fields = {"command": None, "args": None, "tag": None, "min_success": None}
    changes = {"kind": "plugin"} | plugin_fields | fields
    return edit_task_entry(db, settings, name, changes, feedback), False


def _save_plugin_secret(plugin: str, config: Any, value: str) -> None:
    """Save ``value`` into the Secret block the plugin config's ``*_secret`` setting names."""
    from svrctl.secrets import save_prefect_secret

    names = [k for k in type(config).model_fields if k.endswith("_secret") and getattr(config, k)]
    if len(names) != 1:
        raise BadInputError(
            f"invalid secret: the plugin {plugin!r} names no Secret block in its settings "
            "(a setting ending in _secret), so there is nowhere to keep the secret; leave "
            "it empty",
            field="secret",
        )
    save_prefect_secret(str(getattr(config, names[0])), value)
