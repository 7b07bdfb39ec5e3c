"""Every error svrctl raises on purpose.

The hierarchy::

    SvrctlError                      exit 1, the base of everything below
    ├── BadInputError                exit 2, a value a person or script gave is wrong
    │   ├── NotFoundError            a named server, task or tag does not exist
    │   └── ConflictError            a name is taken, or a row is still in use
    ├── DatabaseError                the app database cannot be used as it is
    │   ├── SchemaMissingError       no schema yet: run ``svrctl db upgrade``
    │   ├── SchemaOutdatedError      older than the code: run ``svrctl db upgrade``
    │   └── SchemaTooNewError        newer than the code: upgrade svrctl
    └── (SSH, execution and plugin errors join here in their own modules' issues)

Every error carries a message a person can act on: what happened, why, and
what to do. The CLI prints the message and exits with ``exit_code``.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "ConflictError",
    "DatabaseError",
    "NotFoundError",
    "SchemaMissingError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SvrctlError",
]


class SvrctlError(Exception):
    """Base class of all svrctl errors."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInputError(SvrctlError):
    """A value given on the command line, in a flow parameter or in config is wrong."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(BadInputError):
    """A named object (server, task, tag) does not exist."""


class ConflictError(BadInputError):
    """A name is already taken, or an object is still referenced."""


class DatabaseError(SvrctlError):
    """The app database is unusable in its current state."""


class SchemaMissingError(DatabaseError):
    """The app database has no svrctl schema yet."""

    exit_code = 2


class SchemaOutdatedError(DatabaseError):
    """The app database schema is older than this version of svrctl."""

    exit_code = 2


class SchemaTooNewError(DatabaseError):
    """The app database schema was written by a newer svrctl."""

    exit_code = 2
