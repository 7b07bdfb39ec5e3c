"""File modes: SVRCTL_HOME is 0700, its pin file and databases 0600, whatever the umask.

Each command runs as a real ``svrctl`` process started with the usual login umask
(022), so a file that svrctl does not create private on purpose shows up as 0644.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.processes import stop_groups
from fixtures.sshd import SshdTarget
from test_up import Lines

from svrctl.prefect_server import free_port

pytestmark = pytest.mark.sshd

SVRCTL = str(Path(sys.executable).parent / "svrctl")
UMASK = 0o022


def _env(tmp_path: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVRCTL_", "PREFECT_"))}
    return env | {
        "SVRCTL_HOME": str(home),
        "SVRCTL_TIMEZONE": "UTC",
        "SVRCTL_SSH_KEY_DIR": str(tmp_path / "no-keys"),
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }


def _svrctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [SVRCTL, *args], env=env, capture_output=True, text=True, timeout=120, umask=UMASK
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _loose(home: Path) -> dict[str, str]:
    """Every path under ``home`` (and itself) that its group or others can use."""
    paths = [home, *home.rglob("*")]
    return {str(p): oct(_mode(p)) for p in paths if _mode(p) & 0o077}


def _add_and_trust(env: dict[str, str], sshd: SshdTarget) -> None:
    _svrctl(
        env, "server", "add", "web", "--host", sshd.host, "--port", str(sshd.port),
        "--user", sshd.username, "--key", str(sshd.user_key),
    )  # fmt: skip
    _svrctl(env, "server", "trust", "web", "--yes")


def test_first_start_makes_a_private_home(tmp_path: Path, sshd: SshdTarget) -> None:
    home = tmp_path / "fresh" / "svrctl"
    env = _env(tmp_path, home)
    _svrctl(env, "db", "upgrade")
    assert _mode(home) == 0o700
    assert _mode(home / "svrctl.db") == 0o600
    _add_and_trust(env, sshd)
    _svrctl(env, "task", "add", "t", "--server", "web", "--command", "true")
    assert _mode(home / "known_hosts") == 0o600
    assert _loose(home) == {}


def test_loose_modes_are_tightened(tmp_path: Path, sshd: SshdTarget) -> None:
    """A home copied or created by hand with the umask's modes is made private on use."""
    home = tmp_path / "svrctl"
    env = _env(tmp_path, home)
    _svrctl(env, "db", "upgrade")
    known_hosts = home / "known_hosts"
    known_hosts.write_text("")
    for path, mode in ((home, 0o755), (home / "svrctl.db", 0o644), (known_hosts, 0o644)):
        path.chmod(mode)
    for wal in home.glob("svrctl.db-*"):
        wal.unlink()  # as after a clean stop
    _add_and_trust(env, sshd)
    assert _mode(home) == 0o700
    assert _mode(home / "svrctl.db") == 0o600
    assert _mode(known_hosts) == 0o600
    assert sshd.host_key_line.split()[2] in known_hosts.read_text()
    assert _loose(home) == {}


def test_svrctl_up_first_start_keeps_every_file_private(tmp_path: Path) -> None:
    """`svrctl up` on a new machine: its Prefect server's database and log included."""
    home = tmp_path / "svrctl"
    env = _env(tmp_path, home)
    port = free_port()
    process = subprocess.Popen(
        [SVRCTL, "up", "--no-demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        umask=UMASK,
    )
    lines = Lines(process)
    try:
        lines.wait_for("svrctl is up", timeout=240)
        prefect = home / "prefect"
        for path in (home / "svrctl.db", prefect / "prefect.db", prefect / "server.log"):
            assert path.exists(), path
        assert _mode(home / "prefect-api.json") == 0o600
        assert _loose(home) == {}
    finally:
        stop_groups([process], timeout=120)
    assert _loose(home) == {}, "\n".join(lines.lines)
