"""Turn a task's command and JSON args into one shell command line, every arg quoted."""

from __future__ import annotations

import shlex
from typing import Any

from svrctl.exceptions import BadInputError

__all__ = ["build_command", "check_args"]

Scalar = str | int | float | bool


def check_args(args: Any) -> list[Any] | dict[str, Any] | None:
    """Validate task args: None, a list of scalars, or an object of options; return them."""
    if args is None:
        return None
    if isinstance(args, list):
        for i, item in enumerate(args):
            if not _is_word(item):
                raise BadInputError(
                    f"args[{i}] must be a string or a number, not {_type_name(item)}",
                    field="args",
                )
        return args
    if isinstance(args, dict):
        for key, value in args.items():
            if not key or key.startswith("-") or any(c.isspace() or c == "=" for c in key):
                raise BadInputError(
                    f"args key {key!r} must be a bare option name such as 'verbose' "
                    "(no leading dash, spaces or '=')",
                    field="args",
                )
            values = value if isinstance(value, list) else [value]
            for item in values:
                if item is not None and not isinstance(item, bool) and not _is_word(item):
                    raise BadInputError(
                        f"args[{key!r}] must be a string, number, boolean, null or a list of "
                        f"those, not {_type_name(item)}",
                        field="args",
                    )
        return args
    raise BadInputError(
        f"args must be a JSON list (extra words) or object (--key value options), "
        f"not {_type_name(args)}",
        field="args",
    )


def build_command(command: str, args: list[Any] | dict[str, Any] | None) -> str:
    """Append args to a command: list items as quoted words, object entries as ``--key value``.

    ``true`` adds the bare flag, ``false`` and ``null`` add nothing, and a list value
    repeats the option once per item. Every word is shell-quoted, so no arg can
    change the meaning of the command line.
    """
    checked = check_args(args)
    words: list[str] = []
    if isinstance(checked, list):
        words = [shlex.quote(_word(item)) for item in checked]
    elif isinstance(checked, dict):
        for key, value in checked.items():
            for item in value if isinstance(value, list) else [value]:
                if item is None or item is False:
                    continue
                words.append(shlex.quote(f"--{key}"))
                if item is not True:
                    words.append(shlex.quote(_word(item)))
    return " ".join([command, *words]) if words else command


def _is_word(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _word(value: Scalar) -> str:
    return value if isinstance(value, str) else str(value)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
