"""Opening an SSH connection: TCP (direct or through a jump host), host key, then auth."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paramiko

from svrctl.exceptions import (
    AuthFailedError,
    BannerTimeoutError,
    ChannelClosedError,
    ConnectionRefusedSshError,
    ConnectTimeoutError,
    HostKeyChangedError,
    KeyFileError,
    NameNotResolvedError,
    SshConnectError,
)
from svrctl.ssh.exec import CommandResult, run_on_session
from svrctl.ssh.hostkeys import algorithms_for, known_keys, verify_host_key
from svrctl.ssh.keys import candidate_keys, load_key
from svrctl.ssh.target import SshTarget

__all__ = ["SshSession", "connect", "fetch_host_key"]

log = logging.getLogger("svrctl.ssh")

KEEPALIVE_SECONDS = 15


def _ctx(target: SshTarget) -> dict[str, Any]:
    return {"host": target.host, "port": target.port, "user": target.username}


def _open_socket(target: SshTarget) -> tuple[Any, SshSession | None]:
    """Open the byte stream to the target's sshd: a TCP socket, or a channel via its jump host."""
    if target.jump is not None:
        jump = connect(target.jump)
        try:
            transport = jump.transport
            channel = transport.open_channel(
                "direct-tcpip",
                (target.host, target.port),
                ("127.0.0.1", 0),
                timeout=target.connect_timeout,
            )
        except paramiko.ChannelException as exc:
            jump.close()
            reason = exc.text or f"code {exc.code}"
            hint = (
                "Its sshd refuses TCP forwarding: allow it (AllowTcpForwarding yes)."
                if exc.code == 1  # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
                else "Check the address and that the jump host can reach it."
            )
            raise SshConnectError(
                f"jump host {target.jump.name} could not reach {target.host}:{target.port} "
                f"({reason}). {hint}",
                **_ctx(target),
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            jump.close()
            raise SshConnectError(
                f"jump host {target.jump.name} did not open a tunnel to "
                f"{target.host}:{target.port}: {exc or exc.__class__.__name__}. Check that "
                "it allows TCP forwarding (AllowTcpForwarding).",
                **_ctx(target),
            ) from exc
        return channel, jump
    try:
        sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
    except socket.gaierror as exc:
        raise NameNotResolvedError(
            f"cannot resolve host name {target.host!r} ({exc.strerror}). Check the spelling "
            "and DNS, or use an IP address.",
            **_ctx(target),
        ) from exc
    except ConnectionRefusedError as exc:
        raise ConnectionRefusedSshError(
            f"connection refused by {target.host}:{target.port}: nothing listens there. "
            "Check the port and that sshd is running.",
            **_ctx(target),
        ) from exc
    except TimeoutError as exc:
        raise ConnectTimeoutError(
            f"no answer from {target.host}:{target.port} within {target.connect_timeout:g} s. "
            "Check that the host is up and reachable from this worker, and any firewall.",
            **_ctx(target),
        ) from exc
    except OSError as exc:
        raise SshConnectError(
            f"cannot connect to {target.host}:{target.port}: {exc.strerror or exc}. "
            "Check that the host is reachable from this worker.",
            **_ctx(target),
        ) from exc
    return sock, None


def _start_transport(target: SshTarget, sock: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock)
    transport.banner_timeout = target.banner_timeout
    transport.auth_timeout = target.auth_timeout
    transport.handshake_timeout = target.connect_timeout + target.banner_timeout
    known = known_keys(target)
    if known:
        # Ask only for key types we can check, as OpenSSH does.
        options = transport.get_security_options()
        wanted = [a for a in algorithms_for(known) if a in options.key_types]
        if wanted:
            options.key_types = wanted
    try:
        transport.start_client(timeout=target.connect_timeout + target.banner_timeout)
    except paramiko.SSHException as exc:
        transport.close()
        text = str(exc)
        if _closed_by_server(exc):
            raise _closed_during_handshake(target, exc) from exc
        if "banner" in text.lower():
            raise BannerTimeoutError(
                f"{target.host}:{target.port} accepted the connection but sent no SSH banner "
                f"within {target.banner_timeout:g} s. Check that this port is sshd and that "
                "the server is not overloaded.",
                **_ctx(target),
            ) from exc
        if known and "host key" in text.lower():
            raise HostKeyChangedError(
                f"HOST KEY CHANGED for {target.name}: the server no longer offers a key of "
                f"the pinned type(s) {', '.join(known)}. Nothing was run. If this is expected, "
                f"run `svrctl server trust {target.name}`.",
                key_type="?",
                fingerprint="?",
                **_ctx(target),
            ) from exc
        raise SshConnectError(
            f"SSH negotiation with {target.host}:{target.port} failed: {text}",
            **_ctx(target),
        ) from exc
    except (EOFError, OSError) as exc:
        transport.close()
        raise _closed_during_handshake(target, exc) from exc
    return transport


def _closed_by_server(exc: paramiko.SSHException) -> bool:
    """Tell whether paramiko's handshake error wraps the server closing the connection.

    paramiko reports both "no banner in time" and "connection closed before the
    banner" as "Error reading SSH protocol banner"; the wrapped error tells them apart.
    """
    cause = exc.__context__
    return isinstance(cause, EOFError | OSError) and not isinstance(cause, TimeoutError)


def _closed_during_handshake(target: SshTarget, exc: BaseException) -> SshConnectError:
    cause = exc.__context__ if isinstance(exc, paramiko.SSHException) else exc
    return SshConnectError(
        f"{target.host}:{target.port} closed the connection during the SSH handshake "
        f"({(cause or exc).__class__.__name__}). Check sshd's logs there (MaxStartups, "
        "AllowUsers, TCP wrappers).",
        **_ctx(target),
    )


def _authenticate(target: SshTarget, transport: paramiko.Transport) -> str:
    """Try each key, then the password; return what worked, or raise AuthFailedError."""
    tried: list[tuple[str, str]] = []
    paths = candidate_keys(target.key_path, target.key_dir)
    for path in paths:
        candidate = load_key(path, target.passphrase)
        if candidate.key is None:
            if target.key_path is not None and target.password is None:
                raise KeyFileError(
                    f"cannot use the key {path} for {target.where}: {candidate.problem}. "
                    "Fix the file, or point the server at another key "
                    "(`svrctl server edit NAME --key PATH`).",
                    **_ctx(target),
                )
            tried.append((str(path), candidate.problem or "unusable"))
            continue
        try:
            transport.auth_publickey(target.username, candidate.key)
        except paramiko.AuthenticationException:
            tried.append((str(path), "refused by the server"))
            continue
        except paramiko.SSHException as exc:
            tried.append((str(path), f"error: {exc}"))
            if not transport.is_active():
                break
            continue
        if transport.is_authenticated():
            log.info("Successfully connected with key: %s", path)
            return str(path)
    if target.password is not None and transport.is_active():
        try:
            transport.auth_password(target.username, target.password)
        except paramiko.AuthenticationException:
            tried.append(("password", "refused by the server"))
        except paramiko.SSHException as exc:
            tried.append(("password", f"error: {exc}"))
        else:
            if transport.is_authenticated():
                log.info("Successfully connected with a password")
                return "password"
    if not tried:
        where = target.key_path or target.key_dir
        detail = f"no key found (looked in {where})"
    else:
        detail = "; ".join(f"{name}: {why}" for name, why in tried)
    raise AuthFailedError(
        f"authentication as {target.username!r} on {target.host}:{target.port} failed. "
        f"Tried: {detail}. Check the user name, and that the public key is in "
        f"~{target.username}/.ssh/authorized_keys on the server.",
        tried=tried,
        **_ctx(target),
    )


class SshSession:
    """An open, verified and authenticated SSH connection to one server."""

    def __init__(
        self, target: SshTarget, transport: paramiko.Transport, via: SshSession | None
    ) -> None:
        self.target = target
        self.transport = transport
        self.via = via
        self.auth_method = ""

    def __enter__(self) -> SshSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, and the jump host's if there is one."""
        self.transport.close()
        if self.via is not None:
            self.via.close()

    def run(
        self,
        command: str,
        *,
        timeout: float,
        output_limit: int = 1024 * 1024,
        on_line: Callable[[str, str], None] | None = None,
        pty: bool = False,
    ) -> CommandResult:
        """Run a shell command and return its result; see :func:`run_on_session`."""
        return run_on_session(
            self, command, timeout=timeout, output_limit=output_limit, on_line=on_line, pty=pty
        )

    def open_channel(self, timeout: float) -> paramiko.Channel:
        """Open a session channel, mapping failures to ChannelClosedError."""
        try:
            return self.transport.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ChannelClosedError(
                f"the connection to {self.target.where} is gone ({exc or exc.__class__.__name__})",
                **_ctx(self.target),
            ) from exc


def connect(target: SshTarget) -> SshSession:
    """Connect, verify the host key and authenticate; the caller closes the session."""
    sock, via = _open_socket(target)
    try:
        transport = _start_transport(target, sock)
        try:
            verify_host_key(target, transport.get_remote_server_key())
            used = _authenticate(target, transport)
        except BaseException:
            transport.close()
            raise
    except BaseException:
        if via is not None:
            via.close()
        else:
            sock.close()
        raise
    transport.set_keepalive(KEEPALIVE_SECONDS)
    session = SshSession(target, transport, via)
    session.auth_method = used
    return session


def fetch_host_key(target: SshTarget) -> paramiko.PKey:
    """Return the host key the server presents, without trusting it or logging in."""
    sock, via = _open_socket(target)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = target.banner_timeout
    try:
        transport.start_client(timeout=target.connect_timeout + target.banner_timeout)
        key: paramiko.PKey = transport.get_remote_server_key()
        return key
    except paramiko.SSHException as exc:
        if _closed_by_server(exc):
            raise _closed_during_handshake(target, exc) from exc
        if "banner" in str(exc).lower():
            raise BannerTimeoutError(
                f"{target.host}:{target.port} accepted the connection but sent no SSH banner "
                f"within {target.banner_timeout:g} s. Check that this port is sshd.",
                **_ctx(target),
            ) from exc
        raise SshConnectError(
            f"SSH negotiation with {target.host}:{target.port} failed: {exc}", **_ctx(target)
        ) from exc
    except (EOFError, OSError) as exc:
        raise _closed_during_handshake(target, exc) from exc
    finally:
        transport.close()
        if via is not None:
            via.close()
