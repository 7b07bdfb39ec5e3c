"""The CLI's shared state: settings and the app database, opened on first use."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import click

from svrctl.db.engine import Database, open_database
from svrctl.exceptions import BadInputError, SvrctlError
from svrctl.settings import Settings, load_settings

__all__ = ["App", "SvrctlGroup", "parse_json_option", "pass_app"]


class App:
    """Settings and database of one CLI invocation."""

    def __init__(self) -> None:
        self._db: Database | None = None

    @cached_property
    def settings(self) -> Settings:
        """Return the process settings."""
        return load_settings()

    def db(self) -> Database:
        """Return the app database, checking that its schema matches this code."""
        if self._db is None:
            self.settings.ensure_home()
            self._db = open_database(
                self.settings.resolved_database_url,
                busy_timeout_ms=self.settings.sqlite_busy_timeout_ms,
            )
        return self._db

    def close(self) -> None:
        """Release the database connections."""
        if self._db is not None:
            self._db.dispose()
            self._db = None


pass_app = click.make_pass_decorator(App, ensure=True)


class SvrctlGroup(click.Group):
    """A command group that prints svrctl errors plainly and exits with their code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn a SvrctlError into a message on stderr and its exit code."""
        try:
            return super().invoke(ctx)
        except SvrctlError as exc:
            click.echo(f"error: {_with_option(exc)}", err=True)
            ctx.exit(exc.exit_code)


# Spec fields whose CLI option has another name, so errors can name both.
_OPTION_OF_FIELD = {
    "username": "--user",
    "key_path": "--key",
    "work_pool": "--pool",
    "tags": "--tag",
    "timeout_seconds": "--timeout",
    "retry_delay_seconds": "--retry-delay",
    "overlap_policy": "--overlap",
    "misfire_grace_seconds": "--misfire-grace",
    "plugin_config": "--config",
}


def _with_option(exc: SvrctlError) -> str:
    """Name the CLI option beside the field in a validation message."""
    field = getattr(exc, "field", None)
    option = _OPTION_OF_FIELD.get(field or "")
    prefix = f"invalid {field}:"
    if option and exc.message.startswith(prefix):
        return f"invalid {field} ({option}):{exc.message[len(prefix) :]}"
    return exc.message


def parse_json_option(value: str | None, option: str) -> Any:
    """Parse a JSON option value, or raise a BadInputError naming the option."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{option} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"""quote it for the shell, e.g. {option} '["-v", "a b"]'""",
            field=option.lstrip("-"),
        ) from None
