"""Validated descriptions of servers and tasks, shared by the CLI and the admin flows."""

from __future__ import annotations

import getpass
import ipaddress
import re
from typing import Any, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from svrctl.db.models import ChainOn, HostKeyPolicy, OverlapPolicy, TaskKind
from svrctl.exceptions import BadInputError

__all__ = [
    "CRON_HINT",
    "NAME_PATTERN",
    "SCHEDULE_MAX_LENGTH",
    "TASK_ID_MAX",
    "ServerSpec",
    "TaskSpec",
    "check_block_name",
    "check_name",
    "check_task_id",
    "check_timezone",
    "shown",
    "validate",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$")
_BLOCK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
M = TypeVar("M", bound=BaseModel)
_NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
SCHEDULE_MAX_LENGTH = 255
# Said after a cron expression that does not parse.
CRON_HINT = "; write e.g. '*/15 * * * *' (every 15 minutes): docs/cron.md has the format"
# The largest id a database row can have (a signed 64-bit integer).
TASK_ID_MAX = 2**63 - 1
# A value longer than this is shortened when a message repeats it.
_SHOWN_MAX = 60


def shown(value: object) -> str:
    """Return ``repr(value)`` for a message, shortened when it is long."""
    text = repr(value)
    if len(text) <= _SHOWN_MAX:
        return text
    size = f"{len(value)} characters" if isinstance(value, str | list | dict) else "long"
    return f"{text[: _SHOWN_MAX - 10]}… ({size})"


def check_task_id(value: object) -> int:
    """Return ``value`` if it can be the id of a task, else raise BadInputError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= TASK_ID_MAX:
        raise BadInputError(
            f"invalid task_id: {shown(value)} is not the id of a task: give a whole number "
            "from 1 up, the id that `svrctl task show NAME --json` prints",
            field="task_id",
        )
    return value


def _check_no_nul(value: Any, what: str) -> None:
    """Refuse a NUL byte in any string inside ``value`` (no command line can carry one)."""
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError(f"{what} may not contain a NUL byte (\\u0000)")
    elif isinstance(value, list):
        for item in value:
            _check_no_nul(item, what)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_no_nul(key, what)
            _check_no_nul(item, what)


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid server, task, tag or pool name, else raise ValueError."""
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{what} {shown(value)} is not valid: use {_NAME_RULE}")
    return value


def check_block_name(value: str | None, what: str) -> str | None:
    """Return a Prefect block name (lowercase letters, digits, dashes), or None when empty."""
    if not value:
        return None
    if not _BLOCK_RE.fullmatch(value):
        raise ValueError(
            f"{what} {shown(value)} is not a Prefect block name: use lowercase letters, digits "
            "and dashes, e.g. 'web-1-sudo'"
        )
    return value


def check_timezone(value: str) -> str:
    """Return ``value`` if it names an IANA time zone, else raise ValueError."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {shown(value)}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None
    return value


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root"


class ServerSpec(BaseModel):
    """Everything a person says about a server."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(title="Name", description="Unique name of the server, e.g. 'web-1'.")
    host: str = Field(title="Host", description="Host name or IP address to connect to.")
    port: int = Field(default=22, ge=1, le=65535, title="Port", description="SSH port.")
    username: str = Field(
        default_factory=_default_user, title="User", description="User to log in as."
    )
    key_path: str | None = Field(
        default=None,
        max_length=1024,
        title="Key path",
        description="Private key file; empty means try the keys in SVRCTL_SSH_KEY_DIR.",
    )
    host_key_policy: HostKeyPolicy = Field(
        default=HostKeyPolicy.STRICT,
        title="Host key policy",
        description="strict: only pinned keys; accept-new: pin the key on first contact.",
    )
    work_pool: str | None = Field(
        default=None, title="Work pool", description="Prefect work pool that runs its tasks."
    )
    tags: list[str] = Field(default_factory=list, title="Tags", description="Group names.")
    description: str = Field(default="", max_length=2000, title="Description")
    enabled: bool = Field(default=True, title="Enabled")
    jump: str | None = Field(
        default=None, title="Jump host", description="Server to connect through (ProxyJump)."
    )
    connect_timeout_seconds: int = Field(
        default=10, ge=1, le=300, title="Connect timeout (seconds)"
    )
    key_passphrase_secret: str | None = Field(
        default=None, title="Key passphrase secret", description="Secret block with it."
    )
    password_secret: str | None = Field(
        default=None, title="Password secret", description="Secret block: allows password auth."
    )
    sudo_password_secret: str | None = Field(
        default=None, title="sudo password secret", description="Secret block for sudo prompts."
    )
    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        title="Max concurrent runs",
        description="At most this many runs touch the server at once, across all tasks "
        "(a Prefect global concurrency limit); empty means no limit.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("jump")
    @classmethod
    def _jump(cls, value: str | None) -> str | None:
        return None if not value else check_name(value, "jump host")

    @field_validator("key_passphrase_secret", "password_secret", "sudo_password_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return check_block_name(value, "secret block name")

    @model_validator(mode="after")
    def _not_own_jump(self) -> Self:
        if self.jump == self.name:
            raise ValueError(
                "a server cannot be its own jump host: name another server with --jump"
            )
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        candidate = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
        if not _HOST_RE.fullmatch(value):
            raise ValueError(
                f"host {shown(value)} is not a host name or IP address "
                "(letters, digits, '-', '_' and dots; it may not start with '-')"
            )
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not _USER_RE.fullmatch(value):
            raise ValueError(
                f"user {shown(value)} is not a valid login name "
                "(letters, digits, '_', '.', '-'; starting with a letter or '_')"
            )
        return value

    @field_validator("key_path")
    @classmethod
    def _key_path(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if any(c in value for c in "\0\n\r"):
            raise ValueError("key path may not contain NUL or line breaks")
        return value

    @field_validator("work_pool")
    @classmethod
    def _pool(cls, value: str | None) -> str | None:
        return None if not value else check_name(value, "work pool")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        seen: list[str] = []
        for tag in value:
            check_name(tag.strip(), "tag")
            if tag.strip() not in seen:
                seen.append(tag.strip())
        return seen


class TaskSpec(BaseModel):
    """Everything a person says about a task: its target, step, schedule and run policy."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(title="Name", description="Unique name of the task.")
    description: str = Field(default="", max_length=2000, title="Description")
    kind: TaskKind = Field(title="Kind", description="ssh, local or plugin.")
    server: str | None = Field(default=None, title="Server", description="Target server name.")
    tag: str | None = Field(
        default=None, title="Server tag", description="Run on every enabled server with this tag."
    )
    plugin: str | None = Field(default=None, title="Plugin")
    plugin_config: dict[str, Any] | None = Field(default=None, title="Plugin config")
    command: str | None = Field(default=None, max_length=65536, title="Command")
    args: list[Any] | dict[str, Any] | None = Field(
        default=None,
        title="Args",
        description="A list adds quoted words; an object adds quoted --key value options.",
    )
    schedule: str = Field(
        default="",
        max_length=SCHEDULE_MAX_LENGTH,
        title="Schedule",
        description="Cron; empty = manual only.",
    )
    timezone: str = Field(title="Time zone")
    enabled: bool = Field(default=True, title="Enabled")
    timeout_seconds: int = Field(default=300, gt=0, le=7 * 86400, title="Timeout (seconds)")
    retries: int = Field(default=0, ge=0, le=100, title="Retries")
    retry_delay_seconds: int = Field(default=30, ge=0, le=86400, title="Retry delay (seconds)")
    overlap_policy: OverlapPolicy = Field(default=OverlapPolicy.SKIP, title="Overlap policy")
    misfire_grace_seconds: int = Field(default=60, ge=0, title="Misfire grace (seconds)")
    pty: bool = Field(
        default=False, title="Use a pty", description="For commands such as sudo that need one."
    )
    min_success: int | None = Field(
        default=None,
        ge=1,
        title="Minimum successes",
        description="For a tag: the run succeeds when at least this many servers succeed "
        "(default: all of them).",
    )
    only_if: str | None = Field(
        default=None,
        max_length=65536,
        title="Only if",
        description="A check command run on the same target first; when it exits non-zero "
        "the run is recorded as skipped and the step does not run.",
    )
    after: str | None = Field(
        default=None,
        title="After",
        description="Chain: run this task when the named task's run ends (see 'On').",
    )
    after_on: ChainOn | None = Field(
        default=None,
        title="On",
        description="With 'After': run on the other task's success (default), failure, or any end.",
    )
    notify: list[str] | None = Field(
        default=None,
        title="Notify",
        description="Notification channels of this task; empty means the default set.",
    )
    notify_after_failures: int = Field(
        default=1,
        ge=1,
        le=10_000,
        title="Notify after failures",
        description="Announce a failure only after this many failed runs in a row.",
    )
    notify_remind_hours: float | None = Field(
        default=None,
        gt=0,
        le=24 * 365,
        title="Remind every (hours)",
        description="While the task keeps failing, remind at most this often; empty: never.",
    )
    notify_on_success: bool = Field(
        default=False, title="Notify on success", description="Also announce every success."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("only_if")
    @classmethod
    def _only_if(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("the --only-if check may not contain a NUL byte")
        return value or None

    @field_validator("notify", mode="before")
    @classmethod
    def _notify(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in (part.strip() for part in value.split(",")) if v]
        if isinstance(value, list):
            seen: list[str] = []
            for name in value:
                if not isinstance(name, str):
                    raise ValueError("channel names must be strings")
                check_name(name.strip(), "notification channel")
                if name.strip() not in seen:
                    seen.append(name.strip())
            return seen or None
        return value

    @field_validator("after")
    @classmethod
    def _after(cls, value: str | None) -> str | None:
        return None if not value else check_name(value, "task")

    @model_validator(mode="after")
    def _chain(self) -> Self:
        if self.after is None:
            if self.after_on is not None:
                raise ValueError("'on' applies to a chained task: give the task it runs after")
        elif self.after_on is None:
            self.after_on = ChainOn.SUCCESS
        if self.after is not None and self.after == self.name:
            raise ValueError("a task cannot run after itself")
        return self

    @field_validator("server")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        return None if not value else check_name(value, "server")

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        return None if not value else check_name(value, "tag")

    @field_validator("plugin")
    @classmethod
    def _plugin(cls, value: str | None) -> str | None:
        return None if not value else check_name(value, "plugin")

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("command may not contain a NUL byte")
        return value or None

    @field_validator("args", mode="before")
    @classmethod
    def _args(cls, value: Any) -> Any:
        from svrctl.shellwords import check_args

        try:
            checked = check_args(value)
        except BadInputError as exc:
            raise ValueError(exc.message) from None
        _check_no_nul(checked, "args")
        return checked

    @field_validator("plugin_config")
    @classmethod
    def _plugin_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_no_nul(value, "the plugin config")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value:
            from svrctl.cron import parse_cron

            try:
                parse_cron(value)
            except BadInputError as exc:
                raise ValueError(f"{exc.message}{CRON_HINT}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.min_success is not None and not self.tag:
            raise ValueError("min_success applies to a task that targets a tag")
        if self.kind is TaskKind.SSH:
            if bool(self.server) == bool(self.tag):
                raise ValueError(
                    "an ssh task needs exactly one of a server or a server tag: give "
                    "--server NAME or --tag TAG"
                )
            if not self.command:
                raise ValueError("an ssh task needs a command: give --command CMD")
            if self.plugin:
                raise ValueError("an ssh task has no plugin; use kind 'plugin'")
        elif self.kind is TaskKind.LOCAL:
            if self.server or self.tag:
                raise ValueError("a local task runs on the worker's host: give no server or tag")
            if not self.command:
                raise ValueError("a local task needs a command: give --command CMD")
        else:
            if not self.plugin:
                raise ValueError(
                    "a plugin task needs a plugin name: give --plugin NAME "
                    "(see `svrctl plugin list`)"
                )
            if self.tag:
                raise ValueError("a plugin task targets one server or the local host, not a tag")
        return self


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Build ``model`` from ``data``, turning a validation error into a BadInputError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        if err["type"] not in {"value_error", "missing"} and not isinstance(got, dict | list):
            msg = f"{msg} (got {shown(got)})"
        text = f"invalid {field}: {msg}" if field else msg
        raise BadInputError(text, field=field) from None
