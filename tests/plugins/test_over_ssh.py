"""Stand-in package managers and docker on the SSH target's own PATH.

A second real sshd sets the login user's PATH (sshd_config ``SetEnv``) so that the
stand-in executables come first for commands run over SSH, as they would on a
server that has dnf or docker installed.
"""

from __future__ import annotations

from pathlib import Path

from fixtures.runenv import RunEnv
from fixtures.sshd import SshdFactory
from test_docker import docker  # noqa: F401  (fixture)
from test_updates import _fake_dnf


def _server_with_path(run_env: RunEnv, sshd_factory: SshdFactory, bindir: Path) -> None:
    target = sshd_factory(
        authorized_keys=[run_env.sshd.user_key],
        extra_config=[f"SetEnv PATH={bindir}:/usr/local/bin:/usr/bin:/bin"],
    )
    run_env.ok(
        "server", "add", "far", "--host", target.host, "--port", str(target.port),
        "--user", target.username, "--key", str(run_env.sshd.user_key),
        "--host-key-policy", "accept-new",
    )  # fmt: skip


def test_dnf_check_over_ssh(run_env: RunEnv, sshd_factory: SshdFactory, tmp_path: Path) -> None:
    bindir = tmp_path / "far-bin"
    bindir.mkdir()
    log = _fake_dnf(bindir)
    _server_with_path(run_env, sshd_factory, bindir)
    task_id = run_env.add_task(
        "u", "--plugin", "updates", "--server", "far", "--config", '{"manager": "dnf"}'
    )
    result = run_env.run(task_id)
    assert result.success, result.error
    assert result.output.startswith("far: 3 updates pending (2 security)")
    assert log.read_text().splitlines()[0] == "dnf -q -C check-update"
    assert {(m["name"], m["value"]) for m in result.metrics} == {
        ("updates_pending", 3),
        ("updates_security", 2),
    }


def test_auto_detection_over_ssh_finds_the_first_manager(
    run_env: RunEnv, sshd_factory: SshdFactory, tmp_path: Path
) -> None:
    bindir = tmp_path / "far-bin"
    bindir.mkdir()
    _fake_dnf(bindir)
    _server_with_path(run_env, sshd_factory, bindir)
    task_id = run_env.add_task("u", "--plugin", "updates", "--server", "far")
    result = run_env.run(task_id)
    # apt-get is on this host too and comes first: auto picks apt, as on Debian
    assert result.success, result.error
    assert "| manager | apt |" in result.output


def test_docker_health_over_ssh(
    run_env: RunEnv,
    sshd_factory: SshdFactory,
    docker: Path,  # noqa: F811
) -> None:
    _server_with_path(run_env, sshd_factory, docker.parent / "bin")
    task_id = run_env.add_task("d", "--plugin", "docker", "--server", "far")
    result = run_env.run(task_id)
    assert not result.success
    assert result.error is not None and result.error.startswith("far: 5 docker issue(s): ")
    assert "docker ps -a --no-trunc --format {{json .}}" in docker.read_text()
