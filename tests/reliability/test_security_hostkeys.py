"""Host keys under attack: a real task run against a server whose host key changes.

The server is an sshd of the test's own (``sshd_factory``), trusted with
``svrctl server trust`` and then restarted on the same port with a new host key,
as a reinstalled machine or a machine in the middle would present. Runs go
through ``svrctl task run`` (Prefect's engine, the session's Prefect test API).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import Result
from fixtures.runenv import RunEnv
from fixtures.sshd import SshdFactory, SshdTarget

pytestmark = pytest.mark.sshd

SERVER = "rekeyed"


@pytest.fixture
def env(prefect_api: str, run_env: RunEnv) -> RunEnv:
    """``run_env`` with the session's Prefect test API up."""
    return run_env


def _run(env: RunEnv, task: str) -> tuple[Result, dict[str, Any]]:
    result = env.svrctl("task", "run", task, "--json")
    return result, json.loads(result.stdout)


def _accepted_logins(sshd: SshdTarget) -> int:
    """How many logins the sshd accepted so far (its own log, not svrctl's word)."""
    return sum("Accepted publickey" in line for line in sshd.log_text().splitlines())


def _own_server(env: RunEnv, sshd_factory: SshdFactory, *options: str) -> SshdTarget:
    own = sshd_factory(authorized_keys=[env.sshd.user_key])
    env.ok(
        "server", "add", SERVER, "--host", own.host, "--port", str(own.port),
        "--user", own.username, "--key", str(env.sshd.user_key), "--connect-timeout", "5",
        *options,
    )  # fmt: skip
    return own


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_a_changed_host_key_fails_the_run_and_is_never_re_trusted(
    env: RunEnv, sshd_factory: SshdFactory, policy: str
) -> None:
    own = _own_server(env, sshd_factory, "--host-key-policy", policy)
    marker = env.scratch / "ran"
    env.add_task("hk", "--server", SERVER, "--command", f"touch {marker}; echo ran")
    known_hosts = env.settings.home / "known_hosts"

    trusted = env.svrctl("server", "trust", SERVER, "--yes", "--json")
    assert trusted.exit_code == 0, trusted.output
    assert json.loads(trusted.stdout)["state"] == "pinned"
    assert own.host_key_line.split()[2] in known_hosts.read_text()

    # A trusted host: the run succeeds.
    result, data = _run(env, "hk")
    assert result.exit_code == 0, result.output
    assert data["status"] == "success" and data["output"] == "ran\n"
    assert marker.exists()
    marker.unlink()
    pins_before = known_hosts.read_bytes()
    old_line = own.host_key_line

    # The same port now presents another host key.
    own.restart(new_host_key=True)
    assert own.host_key_line != old_line
    logins = _accepted_logins(own)

    for _ in range(2):  # the second run is refused as well: nothing was re-pinned
        result, data = _run(env, "hk")
        assert result.exit_code == 1, result.output
        assert data["status"] == "failed"
        error = data["error"]
        assert "HOST KEY CHANGED" in error, error
        assert f"svrctl server trust {SERVER}" in error, error
        assert "nothing was run" in error
        assert not marker.exists(), "the command ran on a host with a changed key"
        assert known_hosts.read_bytes() == pins_before, "the new key was silently trusted"
        assert own.host_key_line.split()[2] not in known_hosts.read_text()
    # svrctl did not even authenticate to the host with the unknown key.
    assert _accepted_logins(own) == logins
    (row,) = [r for r in env.rows(_task_id(env, "hk")) if r.status == "failed"][-1:]
    assert row.error is not None and "HOST KEY CHANGED" in row.error

    # The fix the message names: trust the new key on purpose, then runs work again.
    replaced = env.svrctl("server", "trust", SERVER, "--yes", "--json")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(replaced.stdout)["state"] == "replaced"
    assert old_line.split()[2] not in known_hosts.read_text()
    result, data = _run(env, "hk")
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_an_unknown_host_is_refused_under_the_default_policy(
    env: RunEnv, sshd_factory: SshdFactory
) -> None:
    own = _own_server(env, sshd_factory)  # no --host-key-policy: strict by default
    marker = env.scratch / "ran"
    env.add_task("hk", "--server", SERVER, "--command", f"touch {marker}")
    logins = _accepted_logins(own)
    result, data = _run(env, "hk")
    assert result.exit_code == 1, result.output
    assert "is not known yet" in data["error"]
    assert f"svrctl server trust {SERVER}" in data["error"]
    assert not marker.exists()
    assert own.host_key_line.split()[2] not in (env.settings.home / "known_hosts").read_text()
    assert _accepted_logins(own) == logins


def _task_id(env: RunEnv, name: str) -> int:
    shown = json.loads(env.ok("task", "show", name, "--json"))
    return int(shown["id"])
