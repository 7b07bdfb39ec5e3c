"""The Prefect API with a password: anonymous calls are refused, svrctl's clients log in.

A real ``prefect server start`` of the test's own runs with
``PREFECT_SERVER_API_AUTH_STRING``; ``svrctl sync``, ``svrctl worker`` and
``svrctl task run --via-prefect`` run as real processes with (or without)
``PREFECT_API_AUTH_STRING``. The worker's fail-fast on a missing or wrong
password is covered in tests/test_worker.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.sshd import SshdTarget

from svrctl.db.engine import open_database
from svrctl.db.models import TaskHistory
from svrctl.prefect_server import PrefectServer, start_prefect_server

pytestmark = pytest.mark.sshd

BIN = Path(sys.executable).parent
AUTH = f"admin:S3CR3T-api-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server of this module's own that asks every client for AUTH."""
    server = start_prefect_server(
        tmp_path_factory.mktemp("prefect-locked"),
        extra_env={"PREFECT_SERVER_API_AUTH_STRING": AUTH},
    )
    try:
        yield server
    finally:
        server.stop()


def _env(tmp_path: Path, server: PrefectServer, auth: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVRCTL_", "PREFECT_"))}
    env |= {
        "SVRCTL_HOME": str(tmp_path / "home"),
        "SVRCTL_TIMEZONE": "UTC",
        "SVRCTL_SSH_KEY_DIR": str(tmp_path / "no-keys"),
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "PREFECT_API_URL": server.api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    return env | ({"PREFECT_API_AUTH_STRING": auth} if auth else {})


def _svrctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "svrctl"), *args], env=env, capture_output=True, text=True, timeout=300
    )


def _ok(env: dict[str, str], *args: str) -> str:
    result = _svrctl(env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert AUTH.split(":")[1] not in result.stdout + result.stderr
    return result.stdout


def test_anonymous_and_wrong_calls_get_401(locked_server: PrefectServer) -> None:
    api = locked_server.api_url
    calls = [
        ("GET", "/admin/version", None),
        ("POST", "/flows/filter", {}),
        ("POST", "/flow_runs/filter", {}),
        ("POST", "/block_documents/filter", {}),
        ("POST", "/work_pools/", {"name": "intruder", "type": "svrctl"}),
    ]
    for auth in (None, ("admin", "wrong"), ("nobody", AUTH.split(":")[1])):
        for method, path, body in calls:
            answer = httpx.request(method, api + path, json=body, auth=auth, timeout=10)
            assert answer.status_code == 401, (auth, method, path, answer.text)
    user, password = AUTH.split(":")
    for method, path, body in calls[:4]:
        answer = httpx.request(method, api + path, json=body, auth=(user, password), timeout=10)
        assert answer.status_code == 200, (method, path, answer.text)
    # Only the health check answers anyone (docs/production.md says so).
    assert httpx.get(api + "/health", timeout=10).status_code == 200
    pools = httpx.post(api + "/work_pools/filter", json={}, auth=(user, password), timeout=10)
    assert "intruder" not in [p["name"] for p in pools.json()]


def test_sync_worker_and_a_run_authenticate(
    locked_server: PrefectServer, sshd: SshdTarget, tmp_path: Path
) -> None:
    good = _env(tmp_path, locked_server, AUTH)
    anonymous = _env(tmp_path, locked_server, None)
    home = Path(good["SVRCTL_HOME"])
    pool = f"locked-{uuid.uuid4().hex[:8]}"
    _ok(good, "db", "upgrade")
    (home / "known_hosts").write_text(sshd.host_key_line + "\n")
    _ok(
        good, "server", "add", "web", "--host", sshd.host, "--port", str(sshd.port),
        "--user", sshd.username, "--key", str(sshd.user_key), "--pool", pool,
    )  # fmt: skip
    _ok(good, "task", "add", "hello", "--server", "web", "--command", "echo hello")

    # Without the password, sync changes nothing and says why.
    refused = _svrctl(anonymous, "sync")
    assert refused.returncode != 0, refused.stdout
    assert "401" in refused.stdout + refused.stderr or "PREFECT_API_AUTH_STRING" in (
        refused.stdout + refused.stderr
    ), refused.stdout + refused.stderr
    # With it, the deployment is made.
    _ok(good, "sync")
    user, password = AUTH.split(":")
    found = httpx.get(
        f"{locked_server.api_url}/deployments/name/run-task/hello",
        auth=(user, password),
        timeout=10,
    )
    assert found.status_code == 200, found.text
    assert found.json()["work_pool_name"] == pool

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "svrctl"), "worker", "--pool", pool],
            env=good,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while "started!" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # A run through the deployment, picked up by the worker.
        data = json.loads(_ok(good, "task", "run", "hello", "--via-prefect", "--json"))
        assert data["status"] == "success" and data["output"] == "hello\n", data
        db = open_database(f"sqlite:///{home / 'svrctl.db'}")
        try:
            with db.read() as session:
                (row,) = session.query(TaskHistory).all()
        finally:
            db.dispose()
        assert row.status == "success" and row.flow_run_id
        run = httpx.get(
            f"{locked_server.api_url}/flow_runs/{row.flow_run_id}",
            auth=(user, password),
            timeout=10,
        )
        assert run.json()["state"]["type"] == "COMPLETED"
        # The same run cannot even be read without the password.
        anonymous_read = httpx.get(f"{locked_server.api_url}/flow_runs/{row.flow_run_id}")
        assert anonymous_read.status_code == 401
        refused = _svrctl(anonymous, "task", "run", "hello", "--via-prefect", "--json")
        assert refused.returncode != 0
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    text = log.read_text()
    assert "svrctl worker stopped" in text, text
    assert password not in text
