"""Process faults: a worker, the Prefect server, sshd or the app database goes away.

Each test injects its fault for real (a real signal to a real process, a real
server stopped and started again) and then checks that no run is lost or stuck:
every run ends with final history rows in the app database and a final state in
Prefect, and the task's stats count each run once.

The tests stop and restart servers, so none of them touches the session's shared
servers: the Prefect server here is this module's own (restarted at the same
address by the outage test), sshd is the test's own (``sshd_factory``) and the
PostgreSQL server the test's own (``private_pg``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest
from conftest import Invoke
from fixtures.processes import kill_group, stop_groups
from fixtures.runenv import RunEnv, make_run_env
from fixtures.sshd import SshdFactory, SshdTarget
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from reliability.private_pg import PrivatePostgres, private_postgres
from sqlalchemy import select

from svrctl import runtime
from svrctl.automations import ZOMBIE_WITHIN, ensure_zombie_automation
from svrctl.db.engine import Database, open_database
from svrctl.db.migrate import upgrade
from svrctl.db.models import TaskHistory
from svrctl.prefect_server import PrefectServer, free_port, start_prefect_server

pytestmark = pytest.mark.sshd

__all__ = ["private_postgres"]  # the fixture, used by the database test

BIN = Path(sys.executable).parent
POOL = "svrctl"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
T = TypeVar("T")


def wait_for(
    what: str | Callable[[], str], probe: Callable[[], T | None], timeout: float, step: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``.

    ``what`` names the awaited thing; a callable is asked for it (with details) on failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"{said}: not after {timeout:g} s")
        time.sleep(step)


# ----------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """This module's Prefect server (with its services), on a fixed port so it can restart."""
    home = tmp_path_factory.mktemp("own-prefect")
    server = start_prefect_server(home, port=free_port())
    box = [server]
    try:
        yield server
    finally:
        box[0].stop()


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """The app database of these tests: one SQLite file shared by the test and its workers."""
    path = tmp_path / "home" / "svrctl.db"
    path.parent.mkdir(mode=0o700)
    shutil.copyfile(sqlite_template, path)
    path.chmod(0o600)
    return f"sqlite:///{path}"


@dataclass
class World:
    """The test's svrctl world, this module's Prefect server, and svrctl worker processes."""

    env: RunEnv
    server: PrefectServer
    client: SyncPrefectClient
    logs: Path
    workers: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def child_env(self, **extra: str) -> dict[str, str]:
        """The environment of a worker: the API, the app database, svrctl's home; no more."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        home = self.logs / "prefect-home"
        home.mkdir(exist_ok=True)
        return env | {
            "PREFECT_API_URL": self.server.api_url,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra,
        }

    def start_worker(self, **extra_env: str) -> subprocess.Popen[bytes]:
        """`svrctl worker --pool svrctl`, as users start it; wait until it polls."""
        log = self.logs / f"worker-{len(self.workers)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(BIN / "svrctl"), "worker", "--pool", POOL],
                env=self.child_env(**extra_env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.workers.append((process, log))

        def polling() -> bool:
            assert process.poll() is None, f"worker exited:\n{log.read_text()[-3000:]}"
            return "started!" in log.read_text()

        wait_for("the worker polls", polling, 90)
        return process

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and everything in its process group."""
        kill_group(process)

    def worker_log(self) -> str:
        return "\n".join(log.read_text()[-4000:] for _, log in self.workers)

    def stop_workers(self) -> None:
        stop_groups(process for process, _ in self.workers)

    def deployment_id(self, task_id: int) -> UUID:
        """The deployment sync made for a task (synced again if the automatic sync failed)."""
        deployment_id = self.env.task(task_id).deployment_id
        if not deployment_id:
            self.env.ok("sync")
            deployment_id = self.env.task(task_id).deployment_id
        assert deployment_id, "the task was not synced to Prefect"
        return UUID(deployment_id)

    def flow_runs(self, deployment_id: UUID) -> list[FlowRun]:
        """Every flow run of a deployment."""
        return self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(),
            limit=200,
        )

    def describe(self, deployment_id: UUID) -> str:
        """The deployment's flow runs (time, state, message) and its rows, for a failure."""
        lines = [
            f"{r.expected_start_time:%H:%M:%S} {r.id} {r.state_name}: "
            f"{r.state.message if r.state else ''}"
            for r in sorted(
                self.flow_runs(deployment_id), key=lambda r: r.expected_start_time or datetime.min
            )
        ]
        return "\n".join(lines)

    def state_of(self, run_id: str | UUID) -> str | None:
        run = self.client.read_flow_run(UUID(str(run_id)))
        return run.state.type.value if run.state else None

    def pause_schedules(self, task_id: int) -> None:
        """Stop a task's schedule (its deployment paused), so the test can end quietly."""
        self.env.ok("task", "disable", self.env.task(task_id).name)


@pytest.fixture
def api(own_server: PrefectServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrefectServer]:
    """Point this process (and the CLI's automatic sync) at the module's Prefect server."""
    monkeypatch.setenv("PREFECT_API_URL", own_server.api_url)
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: own_server.api_url}):
        yield own_server


def make_world(env: RunEnv, server: PrefectServer, tmp_path: Path) -> Iterator[World]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    with get_client(sync_client=True) as client:
        world = World(env, server, client, logs)
        try:
            yield world
        finally:
            world.stop_workers()


@pytest.fixture
def world(run_env: RunEnv, api: PrefectServer, tmp_path: Path) -> Iterator[World]:
    yield from make_world(run_env, api, tmp_path)


def rows_of(db: Database, task_id: int) -> list[TaskHistory]:
    with db.read() as session:
        return list(
            session.scalars(
                select(TaskHistory).where(TaskHistory.task_id == task_id).order_by(TaskHistory.id)
            )
        )


# ----------------------------------------------------------------------------- 1. worker killed


def test_killed_worker_run_is_crashed_and_the_next_run_runs(world: World) -> None:
    """SIGKILL of the worker mid-run: Crashed in Prefect, ``crashed`` row, slot free again.

    The worker is started as users start one (`svrctl worker`), with no heartbeat
    setting of its own. The task runs every 15 s; its first run blocks on the
    server, the later ones return at once.
    """
    env = world.env
    env.add_server("s1")
    first = env.scratch / "first-run"
    pattern = "^sleep 601$"
    command = f"if mkdir {first} 2>/dev/null; then sleep 601; fi; echo next"
    asyncio.run(ensure_zombie_automation())
    task_id = env.add_task(
        "zombie", "--server", "s1", "--schedule", "*/15 * * * * *", "--command", command
    )
    deployment_id = world.deployment_id(task_id)
    worker = world.start_worker()
    try:
        dead = wait_for(
            "the first run is running on the server",
            lambda: (
                next(
                    (r for r in env.rows(task_id) if r.status == "running" and r.flow_run_id), None
                )
                if env.remote_pids(pattern)
                else None
            ),
            60,
        )
        assert dead.flow_run_id is not None
        assert world.state_of(dead.flow_run_id) == "RUNNING"
        world.kill_worker(worker)
        killed = time.monotonic()
        world.start_worker()  # a supervisor (systemd, docker) starts it again

        # The zombie automation: no heartbeat within its window -> Crashed.
        window = ZOMBIE_WITHIN.total_seconds()
        wait_for(
            f"the killed run becomes Crashed in Prefect\n{world.worker_log()}",
            lambda: world.state_of(dead.flow_run_id or "") == "CRASHED",
            window + 60,
            step=1.0,
        )
        crashed_after = time.monotonic() - killed
        state = world.client.read_flow_run(UUID(dead.flow_run_id)).state
        assert state is not None and "missing heartbeats" in (state.message or "")
        print(f"\nkilled run Crashed {crashed_after:.1f} s after SIGKILL (window {window:g} s)")

        # The next scheduled run takes the freed slot, finishes the dead run's row, runs.
        def next_success() -> TaskHistory | None:
            return next(
                (r for r in env.rows(task_id) if r.id > dead.id and r.status == "success"), None
            )

        after = wait_for(
            lambda: f"a later run succeeds\n{world.describe(deployment_id)}\n{world.worker_log()}",
            next_success,
            60,
        )
        assert after.triggered_by == "schedule" and after.output == "next\n"
        row = next(r for r in env.rows(task_id) if r.id == dead.id)
        assert row.status == "crashed", (row.status, row.error)
        assert row.error is not None and "ended CRASHED" in row.error
        assert row.finished_at is not None
        print(
            f"dead row finished {(row.finished_at - dead.started_at).total_seconds():.1f} s "
            "after it started"
        )
        world.pause_schedules(task_id)
        rows = env.rows(task_id)
        # nothing was recorded missed because a dead run looked as if it still ran
        assert [r.status for r in rows if r.status not in ("success", "crashed")] == [], [
            (r.status, r.error) for r in rows
        ]
        assert not [r for r in rows if r.status == "running" and r.id != dead.id]
        task = env.task(task_id)
        successes = sum(r.status == "success" for r in rows)
        assert (task.run_count, task.failure_count, task.success_count) == (
            successes + 1,
            1,
            successes,
        )
        # every run the scheduler made in between ended (Cancelled while the slot was held)
        runs = [r for r in world.flow_runs(deployment_id) if r.state is not None]
        stuck = [
            r.state_name
            for r in runs
            if r.state is not None
            and r.state.type.value in ("RUNNING", "PENDING")
            and r.start_time is not None
            and r.start_time < datetime.now(UTC) - timedelta(seconds=30)
        ]
        assert stuck == [], stuck
    finally:
        env.sshd.run(f"pkill -KILL -f '{pattern}'")


# ----------------------------------------------------------------------------- 2. Prefect outage


def restart_server(server: PrefectServer, down_seconds: float) -> tuple[datetime, datetime]:
    """Stop the Prefect server, wait, start it again at the same address (same database).

    Returns when it went down and when it answered again. The object then holds the
    new process, so the module fixture stops that one.
    """
    stopped = datetime.now(UTC)
    server.stop()
    time.sleep(down_seconds)
    again = start_prefect_server(server.home, host=server.host, port=server.port)
    server.process = again.process
    return stopped, datetime.now(UTC)


@pytest.mark.timeout(600)
def test_prefect_server_restart_during_a_run(world: World) -> None:
    """The Prefect server goes away mid-run and comes back at the same address.

    The server is stopped while one run is in progress and the worker has just
    claimed (Pending) the next run of a 10-second schedule. The run in progress
    still ends with a finished row. The claimed run and every run that fell due
    while the server was down are each recorded ``missed`` once (their misfire
    grace is 3 s) and end Cancelled, named Missed, in Prefect; their command never
    runs, and no run is left Pending or Running.
    """
    env = world.env
    env.add_server("s1")
    counter = env.scratch / "ticks"
    long_id = env.add_task("through-outage", "--server", "s1", "--command", "sleep 25; echo done")
    tick_id = env.add_task(
        "tick",
        "--server", "s1", "--schedule", "*/10 * * * * *", "--misfire-grace", "3",
        "--command", f"echo tick >> {counter}",
    )  # fmt: skip
    tick_deployment = world.deployment_id(tick_id)
    world.start_worker()
    wait_for("a scheduled tick runs", lambda: counter.exists(), 60)
    run_id = world.client.create_flow_run_from_deployment(world.deployment_id(long_id)).id
    env.wait_running(long_id, timeout=60)

    def claimed() -> FlowRun | None:
        soon = datetime.now(UTC) + timedelta(seconds=2)
        return next(
            (
                r
                for r in world.flow_runs(tick_deployment)
                if r.state is not None
                and r.state.type.value == "PENDING"
                and r.expected_start_time is not None
                and r.expected_start_time > soon
            ),
            None,
        )

    # The worker claims a tick 5 s before it is due: stop the server in between.
    pending = wait_for(
        lambda: f"the worker claims the next tick\n{world.describe(tick_deployment)}",
        claimed,
        30,
        step=0.1,
    )
    stopped, back = restart_server(world.server, down_seconds=25)
    print(f"\nPrefect server down for {(back - stopped).total_seconds():.1f} s")

    (row,) = wait_for(
        f"the run in progress finishes its row\n{world.worker_log()}",
        lambda: [r for r in env.rows(long_id) if r.finished_at is not None],
        60,
    )
    assert (row.status, row.output, row.flow_run_id) == ("success", "done\n", str(run_id))
    final = wait_for(
        f"the run in progress ends in Prefect\n{world.worker_log()}",
        lambda: (s := world.state_of(run_id)) in FINAL and s,
        90,
    )
    print(f"run in progress: history row {row.status}, Prefect state {final}")

    # Every tick due while the server was down (and later than the grace on its return),
    # the one the worker had claimed among them.
    grace, margin = timedelta(seconds=3), timedelta(seconds=2)
    stale = [
        r
        for r in world.flow_runs(tick_deployment)
        if r.expected_start_time is not None
        and stopped + timedelta(seconds=1) < r.expected_start_time < back - grace - margin
    ]
    assert len(stale) >= 2, [r.expected_start_time for r in world.flow_runs(tick_deployment)]
    assert pending.id in {r.id for r in stale}, (pending.expected_start_time, stopped)

    def stale_settled() -> bool:
        ids = {str(r.id) for r in stale}
        rows = [r for r in env.rows(tick_id) if r.flow_run_id in ids and r.finished_at]
        return len({r.flow_run_id for r in rows}) == len(ids)

    try:
        wait_for(
            lambda: (
                "every stale tick has its history row\n"
                + "\n".join(
                    f"{r.expected_start_time:%H:%M:%S} {world.state_of(r.id)}" for r in stale
                )
                + f"\n{world.describe(tick_deployment)}\n{world.worker_log()}"
            ),
            stale_settled,
            90,
        )
        settled = time.monotonic()
    finally:
        world.pause_schedules(tick_id)
    ends = {
        r.flow_run_id: (r.finished_at - back).total_seconds()
        for r in env.rows(tick_id)
        if r.finished_at is not None and r.flow_run_id in {str(x.id) for x in stale}
    }
    print(
        f"{len(stale)} stale ticks, each recorded missed once (the claimed one included); "
        f"rows written {min(ends.values()):.1f}-{max(ends.values()):.1f} s after the server "
        f"was back, the claimed run's {ends[str(pending.id)]:.1f} s after"
    )

    # Nothing is left Pending or Running in Prefect, nor running in the app database.
    def nothing_in_flight() -> bool:
        return not any(
            r.state is not None and r.state.type.value in ("PENDING", "RUNNING")
            for r in world.flow_runs(tick_deployment)
        ) and not any(r.status == "running" for r in env.rows(tick_id))

    wait_for(
        lambda: f"no tick is left in flight\n{world.describe(tick_deployment)}",
        nothing_in_flight,
        60,
    )
    print(f"nothing in flight {time.monotonic() - settled:.1f} s after the stale ticks settled")

    rows = env.rows(tick_id)
    missed = 0
    for run in stale:
        mine = [r for r in rows if r.flow_run_id == str(run.id)]
        assert [r.status for r in mine] == ["missed"], [(r.status, r.error) for r in mine]
        assert mine[0].error is not None and "misfire grace of 3 s" in mine[0].error
        assert mine[0].output in ("", None)
        state = world.client.read_flow_run(run.id).state
        assert state is not None
        assert (state.type.value, state.name) == ("CANCELLED", "Missed"), state
        assert state.message == mine[0].error
        missed += 1
    assert missed == len(stale)
    # No run's step ran twice, and the command ran exactly once per successful row.
    per_run = [r.flow_run_id for r in rows if r.flow_run_id]
    assert len(per_run) == len(set(per_run)), per_run
    executions = counter.read_text().count("tick\n")
    assert executions == sum(r.status == "success" for r in rows)
    # Every finished row is counted once, but a refusal: a tick claimed as the task
    # was disabled at the end is refused (`cancelled`, not counted).
    task = env.task(tick_id)
    refused = [r for r in rows if r.status == "cancelled" and "is disabled" in (r.error or "")]
    finished = [r for r in rows if r.finished_at is not None and r not in refused]
    assert task.run_count == len(finished)
    assert task.success_count == executions


# ----------------------------------------------------------------------------- 3. sshd killed


def kill_sshd(target: SshdTarget) -> None:
    """SIGKILL sshd and every session it runs: the server side of each connection dies."""
    from fixtures.sshd import _descendants

    assert target.process is not None
    victims = [target.process.pid, *_descendants(target.process.pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    target.process.wait(10)
    target.process = None


def run_in_thread(env: RunEnv, task_id: int) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["result"] = env.run(task_id)
        except BaseException as exc:  # reported by the test
            box["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, box


def test_sshd_killed_mid_command(run_env: RunEnv, sshd_factory: SshdFactory) -> None:
    """sshd dies mid-command: the attempt fails as a lost connection; a retry succeeds later."""
    env = run_env
    own = sshd_factory(authorized_keys=[env.sshd.user_key])
    with (env.settings.home / "known_hosts").open("a") as pins:
        pins.write(own.host_key_line + "\n")
    env.add_server("fragile", port=own.port)
    mark = env.scratch / "first"
    once = f"if mkdir {mark} 2>/dev/null; then sleep 302; fi; echo back"
    plain = env.add_task("no-retry", "--server", "fragile", "--command", "sleep 303")
    retried = env.add_task(
        "with-retry",
        "--server", "fragile", "--retries", "1", "--retry-delay", "4", "--command", once,
    )  # fmt: skip
    try:
        # Without retries: the run fails, naming the lost connection.
        thread, box = run_in_thread(env, plain)
        wait_for("the command runs", lambda: env.remote_pids("^sleep 303$"), 30)
        kill_sshd(own)
        thread.join(30)
        assert not thread.is_alive(), "the run is stuck after sshd died"
        result = box["result"]
        assert (result.status, result.success) == ("failed", False)
        assert result.error is not None and "lost the connection to fragile" in result.error
        (row,) = env.rows(plain)
        assert row.status == "failed" and row.error is not None
        assert "lost the connection" in row.error
        task = env.task(plain)
        assert (task.run_count, task.failure_count) == (1, 1)

        # With a retry: sshd is back before it, and the retry succeeds.
        own.start()
        thread, box = run_in_thread(env, retried)
        wait_for("the command runs", lambda: env.remote_pids("^sleep 302$"), 30)
        kill_sshd(own)
        own.start()
        thread.join(60)
        assert not thread.is_alive(), "the run is stuck after sshd came back"
        result = box["result"]
        assert (result.status, result.success, result.attempts) == ("success", True, 2)
        first, second = env.rows(retried)
        assert first.status == "failed" and "lost the connection" in (first.error or "")
        assert (second.status, second.triggered_by, second.output) == ("success", "retry", "back\n")
        task = env.task(retried)
        assert (task.run_count, task.success_count, task.failure_count) == (1, 1, 0)
    finally:
        env.sshd.run("pkill -KILL -f '^sleep 30[23]$'")


# ----------------------------------------------------------------------------- 4. database down


@pytest.fixture
def pg_world(
    private_postgres: PrivatePostgres,
    svrctl: Invoke,
    svrctl_env: Path,
    sshd: SshdTarget,
    api: PrefectServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[World]:
    """A world whose app database is on the test's own PostgreSQL server."""
    url = private_postgres.create_database(f"svrctl_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    monkeypatch.setenv("SVRCTL_DATABASE_URL", url)
    db = open_database(url)
    try:
        for env in make_run_env(svrctl, svrctl_env, db, sshd, monkeypatch, tmp_path):
            yield from make_world(env, api, tmp_path)
    finally:
        db.dispose()
        runtime.reset()


def run_logs(world: World, run_id: UUID) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = world.client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(f"{logging.getLevelName(log.level)} {log.message}" for log in logs)


def said_clearly(world: World, run_id: UUID, where: str) -> str:
    """Wait for the run's log (sent in batches) to name the unreachable database; return it."""

    def clear() -> bool:
        text = run_logs(world, run_id)
        return all(w in text for w in ("ERROR", "the app database", where, "is unreachable"))

    wait_for(lambda: f"a clear error in the run's log:\n{run_logs(world, run_id)}", clear, 30)
    run = world.client.read_flow_run(run_id)
    assert run.state is not None and "is unreachable" in (run.state.message or ""), run.state
    return run_logs(world, run_id)


def test_app_database_down(pg_world: World, private_postgres: PrivatePostgres) -> None:
    """PostgreSQL stops before a run, then in the middle of one, and comes back."""
    world, env, pg = pg_world, pg_world.env, private_postgres
    env.add_server("s1")
    task_id = env.add_task("needs-db", "--server", "s1", "--command", "sleep 6; echo done")
    deployment_id = world.deployment_id(task_id)
    world.start_worker()
    where = f"127.0.0.1:{pg.port}"

    # Down before the run starts: the run fails at once, saying why; nothing is written.
    pg.stop()
    early = world.client.create_flow_run_from_deployment(deployment_id).id
    state = wait_for("the run ends", lambda: (s := world.state_of(early)) in FINAL and s, 90)
    assert state == "FAILED", state
    logs = said_clearly(world, early, where)
    print(f"\nlogs of the run that found the database down:\n{logs[-1500:]}")
    pg.start()
    assert env.rows(task_id) == []

    # Down in the middle of a run: its result cannot be written; the run says so.
    mid = world.client.create_flow_run_from_deployment(deployment_id).id
    env.wait_running(task_id, timeout=60)
    pg.stop()
    state = wait_for("the run ends", lambda: (s := world.state_of(mid)) in FINAL and s, 90)
    assert state == "FAILED", state
    logs = said_clearly(world, mid, where)
    print(f"logs of the run that lost the database:\n{logs[-1500:]}")
    pg.start()

    # Back: the next run finishes the dead run's row first, then runs; stats add up.
    again = world.client.create_flow_run_from_deployment(deployment_id).id
    wait_for("the next run completes", lambda: world.state_of(again) == "COMPLETED", 90)
    rows = env.rows(task_id)
    assert [(r.status, r.flow_run_id) for r in rows] == [
        ("crashed", str(mid)),
        ("success", str(again)),
    ], [(r.status, r.error) for r in rows]
    assert "ended FAILED" in (rows[0].error or "")
    task = env.task(task_id)
    assert (task.run_count, task.success_count, task.failure_count) == (2, 1, 1)
    assert task.last_status == "success"
