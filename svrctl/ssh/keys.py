"""Finding and loading private keys, remembering why each one could not be used."""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path

import paramiko

__all__ = ["AUTO_KEY_NAMES", "KeyCandidate", "candidate_keys", "load_key"]

log = logging.getLogger("svrctl.ssh")

AUTO_KEY_NAMES = ("id_ed25519", "id_rsa", "id_ecdsa", "id_dsa")


@dataclass
class KeyCandidate:
    """A key file to try, and what became of it."""

    path: Path
    key: paramiko.PKey | None = None
    problem: str | None = None


def candidate_keys(key_path: Path | None, key_dir: Path) -> list[Path]:
    """Return the key files to try: the configured one, else those found in ``key_dir``."""
    if key_path is not None:
        return [key_path.expanduser()]
    found = []
    for name in AUTO_KEY_NAMES:
        path = key_dir.expanduser() / name
        if path.is_file():
            log.info("Found SSH key: %s", path)
            found.append(path)
    return found


def load_key(path: Path, passphrase: str | None) -> KeyCandidate:
    """Load one private key; on failure the candidate says why, in words a person can act on."""
    candidate = KeyCandidate(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        candidate.problem = "no such file"
        return candidate
    except OSError as exc:
        candidate.problem = f"cannot read it ({exc.strerror})"
        return candidate
    if not stat.S_ISREG(mode):
        candidate.problem = "not a regular file"
        return candidate
    if mode & 0o077:
        candidate.problem = (
            f"permissions {stat.S_IMODE(mode):04o} are too open: other users could read it "
            f"(run `chmod 600 {path}`)"
        )
        return candidate
    try:
        candidate.key = _read_key(path, passphrase)
    except paramiko.UnknownKeyType as exc:
        kind = getattr(exc.key_type, "__name__", None) or "unknown"
        candidate.problem = (
            f"not a usable private key (its type, {kind}, is not supported: "
            "use an ed25519, rsa or ecdsa key)"
        )
    except paramiko.PasswordRequiredException:
        candidate.problem = (
            "it is encrypted and no passphrase was given "
            "(name a Secret block with --key-passphrase-secret)"
        )
    except paramiko.SSHException as exc:
        text = str(exc)
        if passphrase and ("decrypt" in text.lower() or "passphrase" in text.lower()):
            candidate.problem = "the passphrase does not decrypt it"
        else:
            candidate.problem = f"not a usable private key ({text or exc.__class__.__name__})"
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        if passphrase:
            candidate.problem = "the passphrase does not decrypt it"
        else:
            candidate.problem = f"not a usable private key ({exc})"
    except OSError as exc:
        candidate.problem = f"cannot read it ({exc.strerror})"
    return candidate


def _read_key(path: Path, passphrase: str | None) -> paramiko.PKey:
    """Load a private key with ``PKey.from_path``, smoothing out how paramiko 5 fails.

    Its crypto backend wants the passphrase as bytes, and raises TypeError both for
    an encrypted key without a passphrase and for a passphrase given with a key that
    is not encrypted; such a key loads without it, as with OpenSSH.
    """
    secret = passphrase.encode() if passphrase else None
    try:
        key: paramiko.PKey = paramiko.PKey.from_path(path, secret)
    except TypeError as exc:
        text = str(exc).lower()
        if secret is not None and "not encrypted" in text:
            key = paramiko.PKey.from_path(path, None)
        elif secret is None and ("encrypted" in text or "password" in text):
            raise paramiko.PasswordRequiredException(str(exc)) from exc
        else:
            raise
    return key
