"""The connection pool: reuse, expiry, and a dead pooled connection replaced once."""

from __future__ import annotations

import time
from pathlib import Path

from fixtures.sshd import SshdTarget

from svrctl.ssh.pool import ConnectionPool
from svrctl.ssh.runner import SshRunner
from svrctl.ssh.target import SshTarget


def _target(sshd: SshdTarget, tmp_path: Path) -> SshTarget:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.host_key_line + "\n")
    return SshTarget(
        name="pooled",
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_path=sshd.user_key,
        key_dir=tmp_path,
        known_hosts=known,
        user_known_hosts=None,
    )


def test_an_idle_connection_is_reused(sshd: SshdTarget, tmp_path: Path) -> None:
    pool = ConnectionPool(idle_seconds=30)
    target = _target(sshd, tmp_path)
    with pool.session(target) as first:
        transport = first.transport
    with pool.session(target) as second:
        assert second.transport is transport
        assert second.run("echo again", timeout=10).stdout == "again\n"
    assert pool.close_idle() == 1
    assert not transport.is_active()


def test_concurrent_users_get_their_own_connection(sshd: SshdTarget, tmp_path: Path) -> None:
    pool = ConnectionPool(idle_seconds=30)
    target = _target(sshd, tmp_path)
    with pool.session(target) as a, pool.session(target) as b:
        assert a.transport is not b.transport
    assert pool.close_idle() == 2


def test_expired_connections_are_not_reused(sshd: SshdTarget, tmp_path: Path) -> None:
    pool = ConnectionPool(idle_seconds=0.2)
    target = _target(sshd, tmp_path)
    with pool.session(target) as first:
        transport = first.transport
    time.sleep(0.4)
    with pool.session(target) as second:
        assert second.transport is not transport
    assert not transport.is_active()
    pool.close_idle()


def test_idle_zero_disables_pooling(sshd: SshdTarget, tmp_path: Path) -> None:
    pool = ConnectionPool(idle_seconds=0)
    with pool.session(_target(sshd, tmp_path)) as first:
        transport = first.transport
    assert not transport.is_active()


def test_a_dead_pooled_connection_is_replaced(sshd_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: SshdTarget = sshd_factory()
    pool = ConnectionPool(idle_seconds=60)
    target = _target(server, tmp_path)
    runner = SshRunner(target, output_limit=10_000, pool=pool)
    assert runner.run("echo one", timeout=10).success
    # The server goes away and comes back: the pooled connection is dead.
    server.restart()
    result = runner.run("echo two", timeout=10)
    assert result.success, result.error_text
    assert result.stdout == "two\n"
    pool.close_idle()
