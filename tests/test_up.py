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
from typing import Any

import httpx
import pytest
from fixtures.postgres import PgDatabaseFactory
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
    lines.wait_for("✓ block types registered; blocks: ", timeout=1)  # docs/blocks.md
    assert httpx.get(f"{ui}/api/block_types/slug/svrctl-server", timeout=10).status_code == 200
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


# ------------------------------------------------------------------ svrctl up --postgres

PASSWORD = "not-to-be-shown-7f3a"


def _postgres_url(admin_url: str, database: str, password: str | None = None) -> str:
    """A plain postgresql:// URL (what users type) for `database` on the test server."""
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql", database=database)
    if password is not None:
        url = url.set(password=password)
    return url.render_as_string(hide_password=False)


def _tables(admin_url: str, database: str) -> set[str]:
    from fixtures.postgres import connect_admin, with_database

    with connect_admin(with_database(admin_url, database)) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_up_on_postgres_runs_prefect_and_the_app_there_and_stops_on_sigterm(
    up_env: dict[str, str], pg_database_factory: PgDatabaseFactory
) -> None:
    from fixtures.postgres import DB_PREFIX

    admin = pg_database_factory.admin_url
    name = f"{DB_PREFIX}{os.getpid()}_up"
    for leftover in (name, f"{name}_prefect"):
        pg_database_factory.drop(leftover)
    port = free_port()
    process = subprocess.Popen(
        [SVRCTL, "up", "--port", str(port), "--postgres", _postgres_url(admin, name)],
        env=up_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = Lines(process)
    try:
        # Both databases are missing: svrctl up creates them (the role has CREATEDB).
        lines.wait_for("app database on PostgreSQL: postgresql+psycopg://svrctl:***@", 60)
        assert f"/{name} (created)" in lines.wait_for("✓ app database on PostgreSQL", 1)
        assert f"/{name}_prefect (created)" in lines.wait_for("✓ Prefect database on", 1)
        lines.wait_for("svrctl is up", timeout=240)
        ui = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{ui}/api/health", timeout=10).json() is True

        # Prefect's own tables are in PostgreSQL, not in a SQLite file.
        prefect_tables = _tables(admin, f"{name}_prefect")
        assert {"flow_run", "deployment", "work_pool", "block_document"} <= prefect_tables
        assert not (Path(up_env["SVRCTL_HOME"]) / "prefect" / "prefect.db").exists()
        # The app database is migrated there, and nothing went to the SQLite default.
        assert {"alembic_version", "tasks", "servers", "task_history"} <= _tables(admin, name)
        assert not (Path(up_env["SVRCTL_HOME"]) / "svrctl.db").exists()

        # The demo task runs on its schedule through the worker, recorded in PostgreSQL.
        db = open_database(_postgres_url(admin, name))
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
        db.dispose()
        assert row is not None, "\n".join(lines.lines)
        assert row.triggered_by == "schedule"
        assert "load average" in row.output
        with connect_admin_to(admin, f"{name}_prefect") as conn:
            states = conn.execute(
                "SELECT state_type FROM flow_run WHERE id = %s", (row.flow_run_id,)
            ).fetchall()
        assert states, "the run's flow run is not in Prefect's PostgreSQL database"

        # SIGTERM to svrctl up alone, as a service manager sends it: up stops what it started
        os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("svrctl up did not stop:\n" + "\n".join(lines.lines)) from None
        assert code == 0, "\n".join(lines.lines)
        lines.wait_for("svrctl up stopped", timeout=5)
        assert port_is_free(port), "the Prefect server is still listening"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for created in (name, f"{name}_prefect"):
            pg_database_factory.drop(created)


def connect_admin_to(admin_url: str, database: str) -> Any:
    from fixtures.postgres import connect_admin, with_database

    return connect_admin(with_database(admin_url, database))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"mysql://u:{PASSWORD}@db.lan/svrctl", "the scheme is 'mysql', not postgresql"),
        (f"postgresql://u:{PASSWORD}@/svrctl", "the URL names no host"),
        (f"postgresql://:{PASSWORD}@db.lan/svrctl", "the URL names no user"),
        (f"postgresql://u:{PASSWORD}@db.lan", "the URL names no database"),
        (f"postgresql://u:{PASSWORD}@db.lan/svr-ctl", "the database name 'svr-ctl' must be"),
        (f"postgresql://u:{PASSWORD}@db.lan/svrctl?sslmode=require", "takes no ?options"),
        (f"postgresql://u:{PASSWORD}@db.lan:port/svrctl", "not a database URL"),
        ("db.lan/svrctl", "not a database URL"),
    ],
)
def test_up_postgres_refuses_a_bad_url(up_env: dict[str, str], url: str, why: str) -> None:
    r = subprocess.run(
        [SVRCTL, "up", "--postgres", url], env=up_env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    assert "error: invalid postgres: " in r.stderr
    assert why in r.stderr
    assert "the form is postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE" in r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    assert not (Path(up_env["SVRCTL_HOME"]) / "prefect").exists()


def test_up_postgres_fails_fast_when_the_server_is_unreachable(up_env: dict[str, str]) -> None:
    dead = free_port()
    started = time.monotonic()
    r = subprocess.run(
        [SVRCTL, "up", "--postgres", f"postgresql://svrctl:{PASSWORD}@127.0.0.1:{dead}/svrctl"],
        env=up_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"error: cannot connect to PostgreSQL at 127.0.0.1:{dead}" in r.stderr
    assert "Connection refused" in r.stderr
    assert "Check that PostgreSQL runs" in r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    # Nothing was started: no Prefect server, no SQLite fallback.
    assert "starting a Prefect server" not in r.stdout
    assert not (Path(up_env["SVRCTL_HOME"]) / "prefect").exists()
    assert time.monotonic() - started < 30


def test_up_postgres_says_when_the_login_is_refused(
    up_env: dict[str, str], pg_admin_url: str
) -> None:
    url = _postgres_url(pg_admin_url, "svrctl", password=PASSWORD)
    r = subprocess.run(
        [SVRCTL, "up", "--postgres", url], env=up_env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error: cannot connect to PostgreSQL at " in r.stderr
    assert "password authentication failed" in r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    assert not (Path(up_env["SVRCTL_HOME"]) / "prefect").exists()


def test_up_checks_a_postgres_app_database_url_before_starting(up_env: dict[str, str]) -> None:
    dead = free_port()
    env = up_env | {"SVRCTL_DATABASE_URL": f"postgresql://svrctl:{PASSWORD}@127.0.0.1:{dead}/x"}
    r = subprocess.run([SVRCTL, "up"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{dead}" in r.stderr
    assert "(SVRCTL_DATABASE_URL)" in r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    assert not (Path(up_env["SVRCTL_HOME"]) / "prefect").exists()


def test_up_postgres_refuses_conflicting_settings(up_env: dict[str, str]) -> None:
    url = "postgresql://svrctl:x@127.0.0.1/svrctl"
    env = up_env | {"SVRCTL_DATABASE_URL": "postgresql://svrctl:x@127.0.0.1/other"}
    r = subprocess.run(
        [SVRCTL, "up", "--postgres", url], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "but SVRCTL_DATABASE_URL is already set" in r.stderr
    env = up_env | {"PREFECT_API_URL": "http://127.0.0.1:1/api"}
    r = subprocess.run(
        [SVRCTL, "up", "--postgres", url], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "but PREFECT_API_URL names another one" in r.stderr
