"""`svrctl up`, the main job: start, serve the UI, run the demo task, stop on SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from svrctl.db.engine import open_database
from svrctl.db.models import Task, TaskHistory
from svrctl.prefect_server import free_port, port_is_free
from svrctl.settings import Settings
from svrctl.up import DEMO_TASK, seed_demo

SVRCTL = str(Path(sys.executable).parent / "svrctl")


class Lines:
    """Collects a process's output lines in a thread, so a test can wait for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self._process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed; output:\n" + "\n".join(self.lines))


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVRCTL_", "PREFECT_"))}
    env |= {
        "SVRCTL_HOME": str(tmp_path / "home"),
        "SVRCTL_TIMEZONE": "UTC",
        "HOME": str(tmp_path),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest.fixture
def up_process(up_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Lines, int]]:
    port = free_port()
    process = subprocess.Popen(
        [SVRCTL, "up", "--port", str(port)],
        env=up_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = Lines(process)
    try:
        yield process, lines, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_up_serves_runs_the_demo_and_stops_on_sigint(
    up_process: tuple[subprocess.Popen[str], Lines, int], up_env: dict[str, str]
) -> None:
    process, lines, port = up_process
    lines.wait_for("svrctl is up", timeout=180)
    ui = f"http://127.0.0.1:{port}"
    assert httpx.get(ui, timeout=10).status_code == 200  # the UI is served
    assert httpx.get(f"{ui}/api/health", timeout=10).json() is True
    lines.wait_for(f"added the demo task {DEMO_TASK}", timeout=1)
    lines.wait_for("next scheduled runs:", timeout=1)
    # retention and reconciliation are scheduled without a separate `prefect deploy`
    lines.wait_for("added the maintenance deployments", timeout=1)
    for name in ("history-retention/svrctl", "reconcile-runs/svrctl"):
        found = httpx.get(f"{ui}/api/deployments/name/{name}", timeout=10)
        assert found.status_code == 200, name
        assert found.json()["work_pool_name"] == "svrctl"
        assert found.json()["schedules"][0]["active"] is True

    # The demo task runs on its schedule (every minute) through the worker.
    db = open_database(f"sqlite:///{up_env['SVRCTL_HOME']}/svrctl.db")
    deadline = time.monotonic() + 150
    row = None
    while time.monotonic() < deadline and row is None:
        with db.read() as s:
            task = s.scalars(select(Task).where(Task.name == DEMO_TASK)).one()
            row = s.scalars(
                select(TaskHistory).where(
                    TaskHistory.task_id == task.id, TaskHistory.status == "success"
                )
            ).first()
        time.sleep(1)
    assert row is not None, "\n".join(lines.lines)
    assert row.triggered_by == "schedule"
    assert row.flow_run_id
    assert "load average" in row.output
    db.dispose()

    os.killpg(process.pid, signal.SIGINT)
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError("svrctl up did not stop:\n" + "\n".join(lines.lines)) from None
    assert code == 0, "\n".join(lines.lines)
    lines.wait_for("svrctl up stopped", timeout=5)
    assert port_is_free(port), "the Prefect server is still listening"


def test_demo_is_seeded_once(tmp_path: Path) -> None:
    from svrctl.db.migrate import upgrade

    settings = Settings(home=tmp_path / "home", timezone="UTC")
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    from svrctl import runtime

    runtime.reset()
    said: list[str] = []
    assert seed_demo(settings, said.append) is True
    assert seed_demo(settings, said.append) is False
    with runtime.app_database(settings).read() as s:
        names = [t.name for t in s.scalars(select(Task))]
    assert names == [DEMO_TASK]
    runtime.reset()


def test_up_refuses_a_busy_port(up_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [SVRCTL, "up", "--port", str(port)],
            env=up_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in r.stderr


def test_up_refuses_a_dead_prefect_api_url(up_env: dict[str, str]) -> None:
    env = up_env | {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    r = subprocess.run([SVRCTL, "up"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no Prefect API answers there" in r.stderr
