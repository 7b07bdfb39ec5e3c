"""Every error svrctl raises on purpose.

The hierarchy::

    SvrctlError                      exit 1, the base of everything below
    ├── BadInputError                exit 2, a value a person or script gave is wrong
    │   ├── NotFoundError            a named server, task or tag does not exist
    │   └── ConflictError            a name is taken, or a row is still in use
    ├── SecretError                  exit 2, a named Prefect Secret block is missing or unreadable
    ├── DatabaseError                the app database cannot be used as it is
    │   ├── SchemaMissingError       no schema yet: run ``svrctl db upgrade``
    │   ├── SchemaOutdatedError      older than the code: run ``svrctl db upgrade``
    │   ├── SchemaTooNewError        newer than the code: upgrade svrctl
    │   └── DatabaseUnavailableError the database server cannot be reached (or failed)
    └── SshError                     exit 1; carries host, port, user and the command
        ├── SshConnectError          the TCP connection could not be made
        │   ├── ConnectionRefusedSshError   nothing listens on that port
        │   ├── NameNotResolvedError        the host name does not resolve
        │   └── ConnectTimeoutError         no answer within the connect timeout
        ├── BannerTimeoutError       connected, but no SSH banner came
        ├── AuthFailedError          no key or password was accepted (lists every key tried)
        ├── KeyFileError             a key file cannot be used (missing, malformed, too open)
        ├── HostKeyError             the host key cannot be trusted
        │   ├── HostKeyUnknownError  not pinned yet, policy strict (shows the fingerprint)
        │   └── HostKeyChangedError  differs from the pinned key: nothing runs there
        ├── CommandTimedOutError     the command ran past its timeout and was stopped
        └── ChannelClosedError       the connection or channel closed before the command ended

Every error carries a message a person can act on: what happened, why, and
what to do. The CLI prints the message and exits with ``exit_code``.
"""

from __future__ import annotations

__all__ = [
    "AuthFailedError",
    "BadInputError",
    "BannerTimeoutError",
    "ChannelClosedError",
    "CommandTimedOutError",
    "ConflictError",
    "ConnectTimeoutError",
    "ConnectionRefusedSshError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "HostKeyChangedError",
    "HostKeyError",
    "HostKeyUnknownError",
    "KeyFileError",
    "NameNotResolvedError",
    "NotFoundError",
    "SchemaMissingError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SecretError",
    "SshConnectError",
    "SshError",
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


class SecretError(SvrctlError):
    """A named Prefect Secret block is missing or cannot be read."""

    exit_code = 2


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


class DatabaseUnavailableError(DatabaseError):
    """The app database server cannot be reached, or dropped the connection."""


class SshError(SvrctlError):
    """Something went wrong talking to a server over SSH."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        port: int,
        user: str,
        command: str | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.user = user
        self.command = command

    @property
    def where(self) -> str:
        """Return ``user@host:port``."""
        return f"{self.user}@{self.host}:{self.port}"


class SshConnectError(SshError):
    """The TCP connection to the server could not be made."""


class ConnectionRefusedSshError(SshConnectError):
    """The server refused the connection: nothing listens on that port."""


class NameNotResolvedError(SshConnectError):
    """The server's host name could not be resolved."""


class ConnectTimeoutError(SshConnectError):
    """The server did not answer within the connect timeout."""


class BannerTimeoutError(SshError):
    """The TCP connection opened, but no SSH banner arrived in time."""


class AuthFailedError(SshError):
    """Every key (and the password, if any) was refused."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        port: int,
        user: str,
        tried: list[tuple[str, str]],
        command: str | None = None,
    ) -> None:
        super().__init__(message, host=host, port=port, user=user, command=command)
        self.tried = tried


class KeyFileError(SshError):
    """A key file that was named cannot be used."""


class HostKeyError(SshError):
    """The server's host key cannot be trusted."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        port: int,
        user: str,
        key_type: str,
        fingerprint: str,
        command: str | None = None,
    ) -> None:
        super().__init__(message, host=host, port=port, user=user, command=command)
        self.key_type = key_type
        self.fingerprint = fingerprint


class HostKeyUnknownError(HostKeyError):
    """The host key is not pinned and the policy is strict."""


class HostKeyChangedError(HostKeyError):
    """The host key differs from the pinned one: possibly an attack, nothing is run."""


class CommandTimedOutError(SshError):
    """The command ran past its timeout; its remote processes were stopped."""


class ChannelClosedError(SshError):
    """The connection or channel closed before the command reported an exit status."""
