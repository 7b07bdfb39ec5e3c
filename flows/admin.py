"""Admin flows: manage servers, tasks, plugins and channels from Prefect's UI.

Each flow has a static deployment tagged ``svrctl-admin`` (no schedule), declared in
``prefect.yaml`` and created by ``svrctl up`` (:mod:`svrctl.flows.maintenance`).
Their typed parameters make Prefect's "Custom run" form the editing form. They call
the same functions as the CLI (:mod:`svrctl.admin`), so validation and messages are
the same; a refused input ends the run Failed, with the reason as the flow's first
log line, as the state message and in a markdown artifact. Secrets come in as
``SecretStr`` parameters, are saved as Prefect Secret blocks, and are scrubbed from
the flow run's stored parameters. See docs/admin.md.

No ``from __future__ import annotations`` here: Prefect builds each deployment's
parameter schema from these signatures, including the models built at import time.
"""

import dataclasses
import enum
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

import anyio
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.states import Failed
from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model

from svrctl.admin import (
    Feedback,
    add_server_entry,
    add_task_entry,
    configure_plugin_task,
    edit_server_entry,
    edit_task_entry,
    host_key_offer,
    pin_offer,
    remove_server_entry,
    remove_task_entry,
    server_changes,
    set_task_enabled,
    task_changes,
    test_channel,
    test_server,
)
from svrctl.db.engine import Database
from svrctl.exceptions import BadInputError, SvrctlError
from svrctl.settings import Settings
from svrctl.specs import ServerSpec, TaskSpec

__all__ = [
    "SCRUBBED",
    "notify_test",
    "plugin_configure",
    "server_add",
    "server_edit",
    "server_remove",
    "server_test",
    "server_trust",
    "task_add",
    "task_disable",
    "task_edit",
    "task_enable",
    "task_remove",
]

# What a secret parameter reads once the flow stored it in a Secret block.
SCRUBBED = "**********"


# ----------------------------------------------------------------------------- forms


def _time_zone_enum() -> type[enum.Enum]:
    """Return an enum of the IANA time zone names this host knows (a dropdown in the form)."""
    names = sorted(zoneinfo.available_timezones())
    return enum.Enum("TimeZone", {name: name for name in names}, type=str)  # type: ignore[return-value]


def _optional(model: type[BaseModel], name: str, doc: str, **overrides: Any) -> type[BaseModel]:
    """Return a copy of ``model`` whose fields are all optional (None: leave it as it is)."""
    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        annotation = overrides.pop(key, info.annotation)
        fields[key] = (
            annotation | None,
            Field(default=None, title=info.title, description=info.description),
        )
    return create_model(
        name, __config__=ConfigDict(extra="forbid", title=name), __doc__=doc, **fields
    )


def _plugin_choices() -> tuple[type[BaseModel], ...]:
    """Return one model per installed plugin: its config's fields plus ``plugin: NAME``."""
    from svrctl.plugin import get_plugin, plugin_names

    choices = []
    for name in plugin_names():
        plugin = get_plugin(name)
        choices.append(
            create_model(
                name,
                __base__=plugin.config_model,
                __doc__=plugin.description,
                plugin=(
                    Literal[name],
                    Field(default=name, title="Plugin", description="The plugin this runs."),
                ),  # type: ignore[arg-type]
            )
        )
    return tuple(choices)


PLUGIN_CHOICES = _plugin_choices()

if TYPE_CHECKING:
    TimeZone = str
    ServerChanges = BaseModel
    TaskChanges = BaseModel
    PluginChoice = BaseModel
else:
    TimeZone = _time_zone_enum()
    ServerChanges = _optional(
        ServerSpec,
        "ServerChanges",
        "What changes on the server; empty fields stay as they are, '' clears a text field.",
        max_concurrent=int,
    )
    TaskChanges = _optional(
        TaskSpec,
        "TaskChanges",
        "What changes on the task; empty fields stay as they are, '' clears a text field.",
        timezone=TimeZone,
    )
    PluginChoice = Union[PLUGIN_CHOICES]  # noqa: UP007 - a union built at import time


class TaskForm(TaskSpec):
    """A new task: its target, step, schedule and run policy."""

    model_config = ConfigDict(title="Task")

    timezone: TimeZone | None = Field(  # type: ignore[assignment]
        default=None,
        title="Time zone",
        description="IANA time zone of the schedule; empty means the worker's SVRCTL_TIMEZONE.",
    )


# ----------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What an admin flow did: one log line, a markdown report and JSON-ready data."""

    line: str
    markdown: str
    data: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


Work = Callable[[Database, Settings, Feedback], Outcome]


def _plain(value: Any) -> Any:
    """Return a form value as plain data (forms arrive as dicts; Python callers pass models)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _reveal(value: SecretStr | str | None) -> str | None:
    """Return a secret parameter's value; None or '' when it was left empty (or scrubbed)."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return None if not text or text == SCRUBBED else text


def _hide(text: str, secrets: list[str]) -> str:
    """Remove every given secret value from ``text``."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, SCRUBBED)
    return text


def _table(data: dict[str, Any]) -> str:
    """Return data as a two-column markdown table."""
    rows = ["| Field | Value |", "|---|---|"]
    for key, value in data.items():
        shown = "-" if value in (None, "", []) else value
        if isinstance(shown, list):
            shown = ", ".join(str(v) for v in shown)
        text = str(shown).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {key} | {text} |")
    return "\n".join(rows)


async def _scrub_parameters(names: list[str]) -> None:
    """Replace the given secret parameters of this flow run in Prefect with a placeholder."""
    from prefect import get_client
    from prefect.context import get_run_context

    context = get_run_context()
    run = getattr(context, "flow_run", None)
    if run is None or not names:
        return
    stored = dict(run.parameters or {})
    hidden = {k: SCRUBBED for k in names if stored.get(k)}
    if not hidden:
        return
    try:
        async with get_client() as client:
            await client.update_flow_run(run.id, parameters=stored | hidden)
    except Exception as exc:
        get_run_logger().warning(
            "could not scrub the secret parameters %s from the flow run: %s",
            ", ".join(sorted(hidden)),
            type(exc).__name__,
        )


async def _run(
    title: str, work: Work, secrets: dict[str, str | None] | None = None
) -> State[Any] | dict[str, Any]:
    """Run an admin action in a thread; log and report it, or fail the run with the reason."""
    from svrctl.runtime import app_database, app_settings

    values = [v for v in (secrets or {}).values() if v]
    await _scrub_parameters([k for k, v in (secrets or {}).items() if v])
    logger = get_run_logger()
    warnings: list[str] = []

    def job() -> Outcome:
        settings = app_settings()
        return work(app_database(settings), settings, Feedback(warn=warnings.append))

    try:
        outcome = await anyio.to_thread.run_sync(job)
    except SvrctlError as exc:
        outcome = Outcome(
            line=exc.message,
            markdown=f"## {title}: refused\n\n{exc.message}\n\nNothing was changed.",
            failed=True,
        )
    if outcome.failed and not outcome.markdown.startswith(f"## {title}: refused"):
        outcome.markdown = f"## {title}: failed\n\n{outcome.line}\n\n{outcome.markdown}"
    line = _hide(outcome.line, values)
    if outcome.failed:
        logger.error("%s", line)
    else:
        logger.info("%s", line)
    for warning in warnings:
        logger.warning("%s", _hide(warning, values))
    notes = "".join(f"\n\n> {_hide(w, values)}" for w in warnings)
    await acreate_markdown_artifact(
        markdown=_hide(outcome.markdown, values) + notes,
        description=f"{title}: {line}"[:500],
    )
    if outcome.failed:
        return Failed(message=line)
    return outcome.data


def _server_line(verb: str, data: dict[str, Any]) -> str:
    return (
        f"✓ {verb} server {data['name']} ({data['username']}@{data['host']}:{data['port']}, "
        f"host keys {data['host_key_policy']})"
    )


def _task_line(verb: str, data: dict[str, Any]) -> str:
    when = f"schedule '{data['schedule']}' ({data['timezone']})" if data["schedule"] else "manual"
    state = "" if data["enabled"] else ", disabled"
    return f"✓ {verb} task {data['name']} ({data['kind']}, {when}{state})"


_SERVER_SECRETS = {
    "key_passphrase": "key_passphrase_secret",
    "password": "password_secret",
    "sudo_password": "sudo_password_secret",
}


def _server_secrets(**values: SecretStr | str | None) -> dict[str, str]:
    """Map the given secret parameters to the server fields naming their blocks."""
    out: dict[str, str] = {}
    for key, value in values.items():
        text = _reveal(value)
        if text:
            out[_SERVER_SECRETS[key]] = text
    return out


# ----------------------------------------------------------------------------- servers


@flow(name="server-add", persist_result=False, validate_parameters=False)
async def server_add(
    server: ServerSpec,
    key_passphrase: SecretStr | None = None,
    password: SecretStr | None = None,
    sudo_password: SecretStr | None = None,
) -> State[Any] | dict[str, Any]:
    """Add a server to svrctl's inventory, as `svrctl server add` does.

    Args:
        server: The server: name, address, login, host-key policy, pool and tags.
        key_passphrase: Passphrase of the private key; saved as a Prefect Secret block
            (the server's "Key passphrase secret", or svrctl-server-NAME-key-passphrase).
        password: Login password; saved as a Prefect Secret block, which allows
            password authentication.
        sudo_password: Password answering sudo prompts; saved as a Prefect Secret block.
    """
    secrets = _server_secrets(
        key_passphrase=key_passphrase, password=password, sudo_password=sudo_password
    )

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        data = add_server_entry(db, settings, _plain(server), feedback, secrets=secrets)
        return Outcome(_server_line("added", data), "## Server added\n\n" + _table(data), data)

    return await _run(
        "server-add",
        work,
        {
            "key_passphrase": _reveal(key_passphrase),
            "password": _reveal(password),
            "sudo_password": _reveal(sudo_password),
        },
    )


@flow(name="server-edit", persist_result=False, validate_parameters=False)
async def server_edit(
    server: str,
    changes: ServerChanges,
    key_passphrase: SecretStr | None = None,
    password: SecretStr | None = None,
    sudo_password: SecretStr | None = None,
) -> State[Any] | dict[str, Any]:
    """Change a server, as `svrctl server edit` does: fields left empty stay as they are.

    Args:
        server: Name of the server to change.
        changes: The fields to change; '' clears a text field, 0 removes the
            max-concurrent limit, and a new name renames the server.
        key_passphrase: New key passphrase, saved as the server's Secret block.
        password: New login password, saved as the server's Secret block.
        sudo_password: New sudo password, saved as the server's Secret block.
    """
    secrets = _server_secrets(
        key_passphrase=key_passphrase, password=password, sudo_password=sudo_password
    )

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        wanted = server_changes(**(_plain(changes) or {}))
        if not wanted and not secrets:
            raise BadInputError("nothing to change: fill in at least one field", field="changes")
        data = edit_server_entry(db, settings, server, wanted, feedback, secrets=secrets)
        return Outcome(_server_line("updated", data), "## Server updated\n\n" + _table(data), data)

    return await _run(
        "server-edit",
        work,
        {
            "key_passphrase": _reveal(key_passphrase),
            "password": _reveal(password),
            "sudo_password": _reveal(sudo_password),
        },
    )


@flow(name="server-remove", persist_result=False, validate_parameters=False)
async def server_remove(server: str) -> State[Any] | dict[str, Any]:
    """Remove a server that no task targets, as `svrctl server rm` does.

    Args:
        server: Name of the server to remove.
    """

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        data = remove_server_entry(db, settings, server, feedback)
        return Outcome(
            f"✓ removed server {server}", "## Server removed\n\n" + _table(data), {"name": server}
        )

    return await _run("server-remove", work)


@flow(name="server-test", persist_result=False, validate_parameters=False)
async def server_test(server: str, timeout_seconds: float = 10.0) -> State[Any] | dict[str, Any]:
    """Connect to a server, run a harmless command, and remember its OS, as `svrctl server test`.

    Args:
        server: Name of the server to test.
        timeout_seconds: Seconds the test command may take.
    """

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        if not 0 < timeout_seconds <= 300:
            raise BadInputError(
                "invalid timeout_seconds: give a number of seconds from 0 up to 300",
                field="timeout_seconds",
            )
        report = test_server(db, settings, server, timeout_seconds)
        data = {"ok": True, **dataclasses.asdict(report)}
        os_text = " ".join(p for p in (report.os_type, report.os_version) if p) or "unknown OS"
        line = (
            f"✓ {server}: connected to {report.where} in {report.connect_ms} ms, "
            f"command in {report.command_ms} ms; os: {os_text}"
        )
        return Outcome(line, "## Connection test\n\n" + _table(data), data)

    return await _run("server-test", work)


@flow(name="server-trust", persist_result=False, validate_parameters=False)
async def server_trust(
    server: str, confirm: bool = False, fingerprint: str | None = None
) -> State[Any] | dict[str, Any]:
    """Show a server's host key fingerprint and, with confirm, pin it (`svrctl server trust`).

    Run it once without confirm to see the fingerprint; compare it with the one on
    the server (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then run it
    again with confirm on (and the fingerprint filled in, to pin only that key).

    Args:
        server: Name of the server whose host key to trust.
        confirm: Pin the key; without it the run only shows the fingerprint.
        fingerprint: The SHA256 fingerprint you checked; when given, the key is pinned
            only if the server still presents exactly this key.
    """

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        offer = host_key_offer(db, settings, server)
        data: dict[str, Any] = {
            "server": server,
            "address": offer.where,
            "key_type": offer.key_type,
            "fingerprint": offer.fingerprint,
        }
        presents = f"{server} ({offer.where}) presents {offer.key_type} {offer.fingerprint}"
        if offer.trusted:
            data["state"] = "already-trusted"
            return Outcome(f"✓ {presents}: already trusted", _trust_md(data), data)
        if offer.replaces:
            data["replaces"] = offer.replaces
        if not confirm:
            data["state"] = "not-pinned"
            line = f"{presents}; not pinned: run again with confirm on to pin it"
            if offer.replaces:
                line += f" (it REPLACES the pinned key {offer.replaces})"
            return Outcome(line, _trust_md(data), data)
        if fingerprint and fingerprint.strip() != offer.fingerprint:
            raise BadInputError(
                f"{presents}, not the fingerprint {fingerprint.strip()!r} you gave; nothing "
                "was pinned. Check the key on the server itself before trusting it.",
                field="fingerprint",
            )
        data["state"], data["file"] = pin_offer(offer)
        return Outcome(f"✓ {presents}: {data['state']} in {data['file']}", _trust_md(data), data)

    return await _run("server-trust", work)


def _trust_md(data: dict[str, Any]) -> str:
    """Return the server-trust report."""
    return "## Host key\n\n" + _table(data)


# ----------------------------------------------------------------------------- tasks


@flow(name="task-add", persist_result=False, validate_parameters=False)
async def task_add(task: TaskForm) -> State[Any] | dict[str, Any]:
    """Add a task and create its deployment, as `svrctl task add` does.

    Args:
        task: The task: kind (ssh, local or plugin), target, command or plugin,
            schedule and run policy.
    """

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        fields = {k: v for k, v in (_plain(task) or {}).items() if v is not None}
        data = add_task_entry(db, settings, fields, feedback)
        return Outcome(_task_line("added", data), "## Task added\n\n" + _table(data), data)

    return await _run("task-add", work)


@flow(name="task-edit", persist_result=False, validate_parameters=False)
async def task_edit(task: str, changes: TaskChanges) -> State[Any] | dict[str, Any]:
    """Change a task and sync its deployment, as `svrctl task edit` does.

    Args:
        task: Name of the task to change.
        changes: The fields to change; empty fields stay as they are, '' clears a
            text field (such as 'after' to unchain), and a new name renames the task.
    """

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        wanted = task_changes(_plain(changes) or {})
        if not wanted:
            raise BadInputError("nothing to change: fill in at least one field", field="changes")
        data = edit_task_entry(db, settings, task, wanted, feedback)
        return Outcome(_task_line("updated", data), "## Task updated\n\n" + _table(data), data)

    return await _run("task-edit", work)


@flow(name="task-remove", persist_result=False, validate_parameters=False)
async def task_remove(task: str) -> State[Any] | dict[str, Any]:
    """Remove a task, its history and its deployment, as `svrctl task rm` does.

    Args:
        task: Name of the task to remove.
    """

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        remove_task_entry(db, settings, task, feedback)
        line = f"✓ removed task {task}"
        return Outcome(line, f"## Task removed\n\n{line}", {"name": task})

    return await _run("task-remove", work)


@flow(name="task-enable", persist_result=False, validate_parameters=False)
async def task_enable(task: str) -> State[Any] | dict[str, Any]:
    """Enable a task: its schedule fires again (`svrctl task enable`).

    Args:
        task: Name of the task to enable.
    """
    return await _run("task-enable", _set_enabled(task, True))


@flow(name="task-disable", persist_result=False, validate_parameters=False)
async def task_disable(task: str) -> State[Any] | dict[str, Any]:
    """Disable a task: its schedule stops firing (`svrctl task disable`).

    Args:
        task: Name of the task to disable.
    """
    return await _run("task-disable", _set_enabled(task, False))


def _set_enabled(task: str, enabled: bool) -> Work:
    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        set_task_enabled(db, settings, task, enabled, feedback)
        line = f"✓ {'enabled' if enabled else 'disabled'} task {task}"
        return Outcome(line, f"## Task {task}\n\n{line}", {"name": task, "enabled": enabled})

    return work


# ----------------------------------------------------------------------------- plugins


@flow(name="plugin-configure", persist_result=False, validate_parameters=False)
async def plugin_configure(
    task: str,
    plugin: PluginChoice,
    server: str | None = None,
    schedule: str = "",
    timezone: TimeZone | None = None,
    enabled: bool = True,
    description: str = "",
    secret: SecretStr | None = None,
) -> State[Any] | dict[str, Any]:
    """Configure a plugin on a server with a schedule: create or update its task and deployment.

    Args:
        task: Name of the task that runs the plugin (created when it does not exist).
        plugin: The plugin and its settings.
        server: Server the plugin runs on; empty means the worker's own host.
        schedule: Cron expression, e.g. '*/15 * * * *'; empty means manual runs only.
        timezone: IANA time zone of the schedule; empty means the worker's SVRCTL_TIMEZONE.
        enabled: Whether the schedule fires.
        description: Free text.
        secret: A value the plugin's settings keep in a Secret block (a setting whose
            name ends in _secret, such as the weather plugin's API key); saved there.
    """
    value = _reveal(secret)

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        config = dict(_plain(plugin) or {})
        name = config.pop("plugin", None)
        if not isinstance(name, str) or not name:
            raise BadInputError(
                "invalid plugin: pick a plugin; its settings follow", field="plugin"
            )
        fields = {
            "name": task,
            "plugin": name,
            "plugin_config": config,
            "server": server or "",
            "schedule": schedule,
            "timezone": _plain(timezone),
            "enabled": enabled,
            "description": description,
        }
        data, created = configure_plugin_task(db, settings, fields, feedback, secret=value)
        verb = "added" if created else "updated"
        return Outcome(_task_line(verb, data), f"## Plugin task {verb}\n\n" + _table(data), data)

    return await _run("plugin-configure", work, {"secret": value})


# ----------------------------------------------------------------------------- channels


@flow(name="notify-test", persist_result=False, validate_parameters=False)
async def notify_test(channel: str) -> State[Any] | dict[str, Any]:
    """Send a test message to a notification channel, as `svrctl notify test` does.

    Args:
        channel: Name of the notification channel.
    """

    def work(db: Database, settings: Settings, feedback: Feedback) -> Outcome:
        result = test_channel(db, settings, channel)
        data = dataclasses.asdict(result)
        if result.ok:
            line = f"✓ {channel}: delivered in {result.duration_ms} ms"
        else:
            line = f"✗ {channel}: not delivered: {result.error}"
        return Outcome(line, "## Test notification\n\n" + _table(data), data, failed=not result.ok)

    return await _run("notify-test", work)
