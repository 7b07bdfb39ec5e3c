"""Host-key trust: svrctl's own known_hosts file, the user's, and the two policies."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
from pathlib import Path

import paramiko

from svrctl.db.models import HostKeyPolicy
from svrctl.exceptions import HostKeyChangedError, HostKeyError, HostKeyUnknownError
from svrctl.ssh.target import SshTarget

__all__ = [
    "algorithms_for",
    "fingerprint",
    "known_keys",
    "pin_host_key",
    "verify_host_key",
]

log = logging.getLogger("svrctl.ssh")

# A known key of one type lets the server prove itself with these algorithms.
_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


def fingerprint(key: paramiko.PKey) -> str:
    """Return a key's OpenSSH SHA256 fingerprint, ``SHA256:...``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _parse(line: str) -> paramiko.hostkeys.HostKeyEntry | None:
    """Parse one known_hosts line (no marker); None when paramiko cannot use it."""
    parse = paramiko.hostkeys.HostKeyEntry.from_line
    try:
        entry: paramiko.hostkeys.HostKeyEntry | None = parse(line)
    except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError, TypeError):
        return None
    return entry


def _entries(path: Path | None) -> list[tuple[str | None, paramiko.hostkeys.HostKeyEntry]]:
    """Return (marker, entry) for each usable line of a known_hosts file.

    A line paramiko cannot use (a damaged line, an @cert-authority key) is skipped
    with a warning, not the whole file. ``@revoked`` lines come with their marker.
    """
    if path is None or not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.warning("ignoring unreadable known_hosts file %s: %s", path, exc)
        return []
    found: list[tuple[str | None, paramiko.hostkeys.HostKeyEntry]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker: str | None = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            if marker != "@revoked":
                continue  # @cert-authority: svrctl does not use host certificates
        entry = _parse(line.strip())
        if entry is None:
            log.warning("ignoring line %d of known_hosts file %s: no usable key", number, path)
            continue
        found.append((marker, entry))
    return found


def _load(path: Path | None) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    for marker, entry in _entries(path):
        if marker is None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def _revoked(target: SshTarget) -> list[paramiko.PKey]:
    """Return the keys marked ``@revoked`` in either known_hosts file, whatever host."""
    return [
        entry.key
        for path in (target.user_known_hosts, target.known_hosts)
        for marker, entry in _entries(path)
        if marker == "@revoked"
    ]


def known_keys(target: SshTarget) -> dict[str, paramiko.PKey]:
    """Return the pinned keys of the target, by key type, from both known_hosts files."""
    found: dict[str, paramiko.PKey] = {}
    for path in (target.user_known_hosts, target.known_hosts):
        entry = _load(path).lookup(target.known_hosts_name)
        if entry:
            found.update({kt: entry[kt] for kt in entry})
    return found


def algorithms_for(known: dict[str, paramiko.PKey]) -> list[str]:
    """Return the host-key algorithms that let a server prove one of the known keys."""
    algorithms: list[str] = []
    for key_type in known:
        for algorithm in _ALGORITHMS.get(key_type, (key_type,)):
            if algorithm not in algorithms:
                algorithms.append(algorithm)
    return algorithms


def _changed(target: SshTarget, key: paramiko.PKey, known: dict[str, paramiko.PKey]) -> None:
    pinned = ", ".join(f"{kt} {fingerprint(k)}" for kt, k in known.items())
    raise HostKeyChangedError(
        f"HOST KEY CHANGED for {target.name} ({target.known_hosts_name}): the server now "
        f"presents {key.get_name()} {fingerprint(key)}, but the pinned key is {pinned}. "
        "This can mean someone is intercepting the connection; nothing was run. If the "
        "server was reinstalled or its keys were rotated on purpose, check the new "
        f"fingerprint on the server itself, then run `svrctl server trust {target.name}`.",
        host=target.host,
        port=target.port,
        user=target.username,
        key_type=key.get_name(),
        fingerprint=fingerprint(key),
    )


def verify_host_key(target: SshTarget, key: paramiko.PKey) -> str:
    """Check a presented host key against the pins; return 'known' or 'pinned', or raise."""
    if any(key == revoked for revoked in _revoked(target)):
        raise HostKeyError(
            f"the host key of {target.name} ({target.known_hosts_name}), {key.get_name()} "
            f"{fingerprint(key)}, is marked @revoked in a known_hosts file; nothing was run. "
            "Give the server a new host key, then run "
            f"`svrctl server trust {target.name}`.",
            host=target.host,
            port=target.port,
            user=target.username,
            key_type=key.get_name(),
            fingerprint=fingerprint(key),
        )
    known = known_keys(target)
    if known:
        pinned = known.get(key.get_name())
        if pinned is not None and pinned == key:
            return "known"
        _changed(target, key, known)
    if target.host_key_policy == HostKeyPolicy.ACCEPT_NEW:
        pin_host_key(target, key)
        log.warning(
            "Pinned new host key of %s (%s): %s %s",
            target.name,
            target.known_hosts_name,
            key.get_name(),
            fingerprint(key),
        )
        return "pinned"
    raise HostKeyUnknownError(
        f"the host key of {target.name} ({target.known_hosts_name}) is not known yet, and "
        f"its host-key policy is strict. It presents {key.get_name()} {fingerprint(key)}. "
        f"If that matches the server (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` there), "
        f"run `svrctl server trust {target.name}`.",
        host=target.host,
        port=target.port,
        user=target.username,
        key_type=key.get_name(),
        fingerprint=fingerprint(key),
    )


def pin_host_key(target: SshTarget, key: paramiko.PKey, *, replace: bool = False) -> Path:
    """Write the key into svrctl's known_hosts file (mode 0600); ``replace`` drops old pins."""
    if target.known_hosts is None:
        msg = "this target has no svrctl known_hosts file to pin keys in"
        raise ValueError(msg)
    path = target.known_hosts
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)  # a file made by hand with the umask's mode
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        lines = handle.read().splitlines()
        if replace:
            lines = [line for line in lines if not _names_host(line, target.known_hosts_name)]
        lines.append(f"{target.known_hosts_name} {key.get_name()} {key.get_base64()}")
        handle.seek(0)
        handle.truncate()
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _names_host(line: str, name: str) -> bool:
    """Tell whether a known_hosts line is about ``name`` (plain or hashed entries)."""
    text = line.strip()
    if not text or text.startswith(("#", "@")):
        return False  # comments and marker lines are kept as they are
    entry = _parse(text)
    if entry is None:
        return False
    for pattern in entry.hostnames:
        if pattern == name:
            return True
        if pattern.startswith("|1|") and paramiko.HostKeys.hash_host(name, pattern) == pattern:
            return True
    return False
