"""The ``updates`` plugin: real apt over the real sshd, and dnf/pacman through stand-ins.

dnf and pacman are not on the test host: a small executable placed first on PATH
prints their recorded real-format output (the seam the plugin sees is the
command line). apt-get is real.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fixtures.runenv import RunEnv
from standins import bare_path, first_on_path, run_plugin, stand_in

from svrctl.exceptions import BadInputError
from svrctl.plugin import PluginResult, get_plugin, validate_config
from svrctl.plugins.updates import parse_apt, parse_dnf, parse_pacman, split_check

APT = """Reading package lists...
Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Inst liblzma-dev [5.4.1-1] (5.4.1-1+deb12u2 Debian-Security:12/oldstable-security [amd64]) []
Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
"""
DNF_CHECK = """
openssl.x86_64                       1:3.0.7-25.el9_3                 baseos
kernel.x86_64                        5.14.0-362.18.1.el9_3            baseos
vim-minimal.x86_64                   2:8.2.2637-20.el9_1              baseos
Obsoleting Packages
grub2-tools.x86_64                   1:2.06-70.el9_3.2                baseos
"""
DNF_SECURITY = """RHSA-2024:0310 Important/Sec. openssl-1:3.0.7-25.el9_3.x86_64
RHSA-2024:0448 Important/Sec. kernel-5.14.0-362.18.1.el9_3.x86_64
"""
PACMAN = """linux 6.6.1.arch1-1 -> 6.6.2.arch1-1
openssl 3.1.4-1 -> 3.2.0-1
"""


def test_parse_apt_counts_security_by_suite() -> None:
    found = parse_apt(APT)
    assert found.packages == ["base-files", "libgcrypt20", "liblzma-dev"]
    assert found.security == 2


def test_parse_dnf_stops_at_obsoletes_and_counts_advisories() -> None:
    found = parse_dnf(DNF_CHECK, DNF_SECURITY)
    assert found.packages == ["openssl", "kernel", "vim-minimal"]
    assert found.security == 2


def test_parse_pacman_has_no_security_count() -> None:
    found = parse_pacman(PACMAN)
    assert found.packages == ["linux", "openssl"] and found.security is None


def test_a_failed_check_is_an_error_not_zero_updates() -> None:
    with pytest.raises(ValueError, match="exited 127 \\(not installed\\?\\)"):
        split_check("sh: dnf: not found\n--svrctl-rc:127\n", "dnf")
    with pytest.raises(ValueError, match="no exit code"):
        split_check("", "apt")
    assert split_check("x\n--svrctl-rc:100\nsec\n", "dnf") == ("x\n", "sec\n")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"action": "upgrade-everything"}, "action"),
        ({"manager": "yum"}, "manager"),
        ({"max_pending": -1}, "max_pending"),
        ({"refresh": "sometimes"}, "refresh"),
        ({"packages": ["x"]}, "packages"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(BadInputError) as info:
        validate_config(get_plugin("updates"), config)
    assert info.value.field == f"plugin_config.{field}"


def _apt_count() -> tuple[int, int]:
    out = subprocess.run(
        ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"],
        capture_output=True,
        text=True,
        env=dict(os.environ, LC_ALL="C"),
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("Inst ")]
    return len(lines), sum("-security" in line.lower() for line in lines)


def test_check_with_real_apt_over_ssh(run_env: RunEnv) -> None:
    run_env.add_server("box")
    task_id = run_env.add_task("u", "--plugin", "updates", "--server", "box")
    result = run_env.run(task_id)
    pending, security = _apt_count()
    assert result.success, result.error
    assert result.output.startswith(f"box: {pending} updates pending ({security} security)")
    assert f"| pending | {pending} |" in result.output


# ------------------------------------------------------------------ stand-ins on PATH


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory first on PATH for stand-in package managers; calls go to calls.log."""
    return first_on_path(tmp_path, monkeypatch)


def _run(config: dict[str, object]) -> PluginResult:
    return run_plugin("updates", config)


def _fake_dnf(bindir: Path) -> Path:
    log = bindir / "calls.log"
    (bindir / "check.txt").write_text(DNF_CHECK)
    (bindir / "security.txt").write_text(DNF_SECURITY)
    stand_in(
        bindir,
        "dnf",
        f'echo "dnf $*" >> {log}\n'
        f'case "$*" in\n'
        f"  *check-update*) cat {bindir}/check.txt; exit 100;;\n"
        f"  *updateinfo*) cat {bindir}/security.txt;;\n"
        f"esac\n",
    )
    return log


def test_dnf_check_reads_the_cache_only(bindir: Path) -> None:
    log = _fake_dnf(bindir)
    result = _run({"manager": "dnf"})
    assert result.success
    assert result.summary == "here: 3 updates pending (2 security): openssl, kernel, vim-minimal"
    assert result.notify and result.priority == 8
    calls = log.read_text().splitlines()
    assert calls == ["dnf -q -C check-update", "dnf -q -C updateinfo list --security"]
    assert {m.name: m.value for m in result.metrics} == {
        "updates_pending": 3,
        "updates_security": 2,
    }


def test_thresholds_fail_the_check(bindir: Path) -> None:
    _fake_dnf(bindir)
    result = _run({"manager": "dnf", "max_pending": 2, "max_security": 1})
    assert not result.success
    assert result.summary == (
        "here: 3 updates pending (more than 2); 2 security updates pending (more than 1)"
    )
    assert _run({"manager": "dnf", "max_pending": 3, "max_security": 2}).success


def test_refresh_only_when_asked(bindir: Path) -> None:
    log = _fake_dnf(bindir)
    _run({"manager": "dnf", "refresh": True})
    assert log.read_text().splitlines() == [
        "dnf -q makecache",
        "dnf -q -C check-update",
        "dnf -q -C updateinfo list --security",
    ]


def test_pacman_check(bindir: Path) -> None:
    (bindir / "pending.txt").write_text(PACMAN)
    stand_in(bindir, "pacman", f'[ "$1" = -Qu ] && cat {bindir}/pending.txt\n')
    result = _run({"manager": "pacman"})
    assert result.summary == "here: 2 updates pending (unknown security): linux, openssl"
    assert [m.name for m in result.metrics] == ["updates_pending"]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            "apply",
            "apt-get -y -q -o Dpkg::Options::=--force-confdef "
            "-o Dpkg::Options::=--force-confold dist-upgrade [noninteractive]",
        ),
        ("cleanup", "apt-get -y -q autoremove []\napt-get -q clean []"),
    ],
)
def test_apply_and_cleanup_run_only_when_asked(
    bindir: Path, action: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEBIAN_FRONTEND", raising=False)
    log = bindir / "calls.log"
    stand_in(bindir, "apt-get", f'echo "apt-get $* [$DEBIAN_FRONTEND]" >> {log}\n')
    result = _run({"manager": "apt", "action": action})
    assert result.success, result.summary
    assert result.summary == f"here: {action} with apt done"
    assert log.read_text().strip() == expected
    assert os.geteuid() == 0  # as root: no sudo in front


def test_a_failing_apply_fails_and_notifies(bindir: Path) -> None:
    stand_in(bindir, "dnf", "echo 'Error: Failed to download metadata' >&2; exit 1\n")
    result = _run({"manager": "dnf", "action": "apply"})
    assert not result.success and result.notify
    assert "apply failed on here" in result.summary
    assert "Failed to download metadata" in result.details


def test_no_package_manager_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare_path(tmp_path, monkeypatch)
    result = _run({})
    assert not result.success
    assert result.summary.startswith("updates: no apt-get, dnf or pacman on here")


def test_plugin_task_config_is_stored_and_shown(run_env: RunEnv) -> None:
    config = json.dumps({"action": "check", "max_security": 0})
    run_env.add_task("u", "--plugin", "updates", "--config", config)
    shown = json.loads(run_env.ok("task", "show", "u", "--json"))
    assert shown["plugin_config"] == {"action": "check", "max_security": 0}
