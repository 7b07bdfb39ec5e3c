"""``svrctl server test`` against a real sshd on loopback, on SQLite and PostgreSQL.

HOME is a tmp dir in every test, so the user's ~/.ssh/known_hosts that
target_for_server reads is a private file; svrctl's own known_hosts lives in the
tmp SVRCTL_HOME, and SVRCTL_SSH_KEY_DIR is an empty tmp dir unless a test puts a
key there.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Invoke
from fixtures.sshd import SshdTarget
from helpers_auth import SilentListener, closed_port, json_out, pin, ssh_keygen_fingerprint

REPORT_KEYS = {
    "ok",
    "server",
    "where",
    "connect_ms",
    "command_ms",
    "auth",
    "host_key",
    "os_type",
    "os_version",
    "kernel",
}


@dataclass
class Env:
    """Where svrctl and the (fake) user keep their files in one test."""

    svrctl_home: Path
    user_home: Path
    key_dir: Path

    @property
    def known_hosts(self) -> Path:
        """svrctl's own known_hosts file."""
        return self.svrctl_home / "known_hosts"


@pytest.fixture
def env(svrctl_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Env:
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    key_dir = tmp_path / "key-dir"
    key_dir.mkdir(mode=0o700)
    monkeypatch.setenv("SVRCTL_SSH_KEY_DIR", str(key_dir))
    return Env(svrctl_home=svrctl_env, user_home=user_home, key_dir=key_dir)


def _this_os() -> tuple[str, str, str]:
    """(ID, VERSION_ID, `uname -srm`) of this machine, read without svrctl."""
    release = platform.freedesktop_os_release()
    uname = os.uname()
    return release["ID"], release["VERSION_ID"], f"{uname.sysname} {uname.release} {uname.machine}"


def _add(svrctl: Invoke, name: str, sshd: SshdTarget, *extra: str, port: int = 0) -> None:
    result = svrctl(
        "server", "add", name, "--host", sshd.host, "--port", str(port or sshd.port),
        "--user", sshd.username, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def _show(svrctl: Invoke, name: str) -> dict[str, object]:
    shown = svrctl("server", "show", name, "--json")
    assert shown.exit_code == 0, shown.output
    data: dict[str, object] = json_out(shown)
    return data


def _as_utc(text: object) -> datetime:
    assert isinstance(text, str)
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_server_test_reports_and_remembers_the_os(
    svrctl: Invoke, env: Env, sshd: SshdTarget
) -> None:
    os_id, os_version, kernel = _this_os()
    _add(svrctl, "lab-1", sshd, "--key", str(sshd.user_key))
    pin(sshd, env.known_hosts)
    before = _show(svrctl, "lab-1")
    assert (before["os_type"], before["os_version"], before["last_seen"]) == (None, None, None)

    started = datetime.now(UTC)
    result = svrctl("server", "test", "lab-1")
    finished = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    assert re.search(
        rf"^✓ lab-1: connected to {re.escape(sshd.username)}@127\.0\.0\.1:{sshd.port} "
        r"in \d+ ms, command in \d+ ms$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout
    assert f"  os: {os_id} {os_version} ({kernel})" in result.stdout
    fingerprint = ssh_keygen_fingerprint(sshd.host_key.with_name("host_key.pub"))
    assert f"  auth: {sshd.user_key}; host key: ssh-ed25519 {fingerprint}" in result.stdout

    after = _show(svrctl, "lab-1")
    assert (after["os_type"], after["os_version"]) == (os_id, os_version)
    seen = _as_utc(after["last_seen"])
    assert started - timedelta(seconds=1) <= seen <= finished + timedelta(seconds=1)
    listed = svrctl("server", "list")
    assert f"{os_id} {os_version}" in listed.stdout


def test_server_test_json(svrctl: Invoke, env: Env, sshd: SshdTarget) -> None:
    os_id, os_version, kernel = _this_os()
    _add(svrctl, "lab-2", sshd, "--key", str(sshd.user_key))
    pin(sshd, env.known_hosts)
    result = svrctl("server", "test", "lab-2", "--json")
    assert result.exit_code == 0, result.output
    report = json_out(result)
    assert set(report) == REPORT_KEYS
    fingerprint = ssh_keygen_fingerprint(sshd.host_key.with_name("host_key.pub"))
    assert report == report | {
        "ok": True,
        "server": "lab-2",
        "where": f"{sshd.username}@{sshd.host}:{sshd.port}",
        "auth": str(sshd.user_key),
        "host_key": f"ssh-ed25519 {fingerprint}",
        "os_type": os_id,
        "os_version": os_version,
        "kernel": kernel,
    }
    assert isinstance(report["connect_ms"], int) and report["connect_ms"] >= 0
    assert isinstance(report["command_ms"], int) and report["command_ms"] >= 0
    stored = _show(svrctl, "lab-2")
    assert (stored["os_type"], stored["os_version"]) == (os_id, os_version)
    assert stored["last_seen"] is not None


def test_server_test_closed_port(svrctl: Invoke, env: Env, sshd: SshdTarget) -> None:
    port = closed_port()
    _add(svrctl, "down", sshd, "--key", str(sshd.user_key), port=port)
    result = svrctl("server", "test", "down")
    assert result.exit_code == 1
    assert f"✗ down: connection refused by 127.0.0.1:{port}" in result.stderr
    as_json = svrctl("server", "test", "down", "--json")
    assert as_json.exit_code == 1
    failure = json_out(as_json)
    assert failure == failure | {"server": "down", "ok": False}
    assert failure["error_type"] == "ConnectionRefusedSshError"
    assert failure["error"].startswith(f"connection refused by 127.0.0.1:{port}")
    stored = _show(svrctl, "down")
    assert (stored["os_type"], stored["last_seen"]) == (None, None)


def test_server_test_unknown_host_key_under_strict(
    svrctl: Invoke, env: Env, sshd: SshdTarget
) -> None:
    _add(svrctl, "fresh", sshd, "--key", str(sshd.user_key))
    fingerprint = ssh_keygen_fingerprint(sshd.host_key.with_name("host_key.pub"))
    result = svrctl("server", "test", "fresh")
    assert result.exit_code == 1
    assert "✗ fresh: the host key of fresh" in result.stderr
    assert "is not known yet" in result.stderr
    assert fingerprint in result.stderr
    assert "svrctl server trust fresh" in result.stderr
    as_json = svrctl("server", "test", "fresh", "--json")
    assert as_json.exit_code == 1
    failure = json_out(as_json)
    assert failure["error_type"] == "HostKeyUnknownError"
    assert fingerprint in failure["error"]
    # Nothing was pinned anywhere, and the server was not marked as seen.
    assert not env.known_hosts.exists()
    assert not (env.user_home / ".ssh").exists()
    assert _show(svrctl, "fresh")["last_seen"] is None


def test_server_test_trusts_the_users_known_hosts(
    svrctl: Invoke, env: Env, sshd: SshdTarget
) -> None:
    pin(sshd, env.user_home / ".ssh" / "known_hosts")
    _add(svrctl, "mine", sshd, "--key", str(sshd.user_key))
    result = svrctl("server", "test", "mine", "--json")
    assert result.exit_code == 0, result.output
    assert json_out(result)["ok"] is True
    assert not env.known_hosts.exists()


def test_accept_new_pins_in_svrctl_home_only(svrctl: Invoke, env: Env, sshd: SshdTarget) -> None:
    _add(svrctl, "new", sshd, "--key", str(sshd.user_key), "--host-key-policy", "accept-new")
    result = svrctl("server", "test", "new")
    assert result.exit_code == 0, result.output
    assert env.known_hosts.read_text() == sshd.host_key_line + "\n"
    assert not (env.user_home / ".ssh").exists()


def test_server_test_finds_the_key_in_the_key_dir(
    svrctl: Invoke, env: Env, sshd: SshdTarget
) -> None:
    key = env.key_dir / "id_ed25519"
    shutil.copyfile(sshd.user_key, key)
    key.chmod(0o600)
    _add(svrctl, "auto", sshd)  # no --key
    pin(sshd, env.known_hosts)
    result = svrctl("server", "test", "auto", "--json")
    assert result.exit_code == 0, result.output
    assert json_out(result)["auth"] == str(key)


def test_server_test_auth_failure(svrctl: Invoke, env: Env, sshd: SshdTarget) -> None:
    result = svrctl(
        "server", "add", "nobody", "--host", sshd.host, "--port", str(sshd.port),
        "--user", "svrctl-nobody", "--key", str(sshd.user_key),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pin(sshd, env.known_hosts)
    tested = svrctl("server", "test", "nobody")
    assert tested.exit_code == 1
    assert "authentication as 'svrctl-nobody'" in tested.stderr
    assert f"{sshd.user_key}: refused by the server" in tested.stderr


def test_server_test_unknown_server(svrctl: Invoke, env: Env) -> None:
    result = svrctl("server", "test", "ghost")
    assert result.exit_code == 2
    assert "ghost" in result.stderr


def test_server_trust_when_the_server_hangs_up(svrctl: Invoke, env: Env, sshd: SshdTarget) -> None:
    with SilentListener(hang_up=True, greeting=b"SSH-2.0-OpenSSH_9.2\r\n") as listener:
        _add(svrctl, "flaky", sshd, port=listener.port)
        trusted = svrctl("server", "trust", "flaky", "--yes")
        tested = svrctl("server", "test", "flaky")
    for result in (trusted, tested):
        assert result.exit_code == 1
        assert "closed the connection during the SSH handshake" in result.stderr
    assert not env.known_hosts.exists()
