"""Faults under load: many runs at once, a sync among them, a hanging channel, huge output.

Every run goes through svrctl's real execution path: the ``run-task`` flow, called in
this process the way the svrctl worker runs its flow runs (many at once in one event
loop), against the real loopback sshd or the local shell, a real app database (each
test that takes ``run_env`` runs once on SQLite and once on PostgreSQL) and the
session's Prefect test server. Notification channels are real HTTP listeners on
loopback, or a loopback socket that accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures.notify_listener import NotifyListener
from fixtures.runenv import RunEnv
from prefect import get_client
from prefect.client.schemas.objects import State
from sqlalchemy import text, update
from sqlalchemy.engine import make_url

from svrctl.db.engine import Database, open_database
from svrctl.db.migrate import upgrade
from svrctl.db.models import NotificationLog, Task, TaskHistory
from svrctl.execution.engine import TaskExecutionResult
from svrctl.flows.run_task import run_task
from svrctl.notify.channels import add_channel

pytestmark = pytest.mark.sshd

SVRCTL_BIN = str(Path(sys.executable).parent / "svrctl")
# Words that must never show up anywhere when runs share the app database.
LOCK_ERRORS = ("database is locked", "deadlock", "QueuePool limit", "could not serialize")


def unique(prefix: str) -> str:
    """A name no other test uses: the Prefect server is shared by the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def env(prefect_api: str, run_env: RunEnv) -> RunEnv:
    """``run_env`` with the Prefect test server up."""
    return run_env


@pytest.fixture
def short_notify(monkeypatch: pytest.MonkeyPatch) -> float:
    """A 2 s notification timeout for the settings the runs read; return it."""
    monkeypatch.setenv("SVRCTL_NOTIFY_TIMEOUT_SECONDS", "2")
    return 2.0


@dataclass(frozen=True)
class Finished:
    """One flow run of the run-task flow: its final state, its result and its flow run id."""

    state: State[Any]
    result: TaskExecutionResult
    flow_run_id: str
    seconds: float


async def _run_one(task_id: int, delay: float = 0.0) -> Finished:
    await asyncio.sleep(delay)
    started = time.monotonic()
    state = await run_task(task_id=task_id, return_state=True)
    seconds = time.monotonic() - started
    result = await state.aresult(raise_on_failure=False)
    assert isinstance(result, TaskExecutionResult), result
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return Finished(state, result, str(run_id), seconds)


def run_flows(task_ids: list[int], stagger: float = 0.0) -> list[Finished]:
    """Run the run-task flow once per id, all at once in one event loop, as the worker does.

    With ``stagger``, the n-th flow run starts n × stagger seconds after the first:
    Prefect's own test server on SQLite answers 503 when 50 flow runs are created in
    the same instant (a known limit of Prefect on SQLite, not of svrctl's database).
    The client retries more often than its default for the same reason.
    """
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    async def run_all() -> list[Finished]:
        jobs = (_run_one(t, n * stagger) for n, t in enumerate(task_ids))
        return list(await asyncio.gather(*jobs))

    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 8}):
        return asyncio.run(run_all())


def release_when_running(db: Database, release: Path, count: int, timeout: float = 300) -> None:
    """Wait until ``count`` rows are running at once, then let every held run go on."""
    deadline = time.monotonic() + timeout
    try:
        while len([r for r in all_rows(db) if r.status == "running"]) < count:
            assert time.monotonic() < deadline, f"{count} runs were never running at once"
            time.sleep(0.2)
    finally:
        release.touch()


def hold_until(release: Path) -> str:
    """Return a shell snippet that waits until ``release`` exists (at most 300 s)."""
    return f"for i in $(seq 1 3000); do [ -e {release} ] && break; sleep 0.1; done"


def all_rows(db: Database) -> list[TaskHistory]:
    with db.read() as session:
        return list(session.query(TaskHistory).order_by(TaskHistory.id))


def notification_rows(db: Database) -> list[NotificationLog]:
    with db.read() as session:
        return list(session.query(NotificationLog).order_by(NotificationLog.id))


def most_at_once(rows: list[TaskHistory]) -> int:
    """Return the largest number of rows whose [started_at, finished_at] overlap."""
    edges: list[tuple[datetime, int]] = []
    for row in rows:
        assert row.finished_at is not None
        edges += [(row.started_at, 1), (row.finished_at, -1)]
    best = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        current += step
        best = max(best, current)
    return best


def lock_errors(texts: list[str | None]) -> list[str]:
    """Return the texts that speak of a lock problem of the database."""
    return [t for t in texts if t and any(w.lower() in t.lower() for w in LOCK_ERRORS)]


# Each task's command, by how its runs end: "ok" always succeeds, "bad" always fails
# with exit 4, "alt" succeeds on its 1st, 3rd and 5th run and fails (exit 1) on the
# others: a counter file under flock numbers the runs, whatever order they start in.
def command_for(mode: str, scratch: Path, name: str, hold: str = "sleep 1") -> str:
    """Return the shell command of a task that ends as ``mode`` says."""
    if mode == "ok":
        return f"{hold}; echo ok"
    if mode == "bad":
        return f"{hold}; echo broken >&2; exit 4"
    lock, count = scratch / f"{name}.lock", scratch / f"{name}.count"
    return (
        f"n=$(flock {lock} sh -c 'n=$(cat {count} 2>/dev/null || echo 0); "
        f"echo $((n+1)) > {count}; echo $n'); {hold}; echo run $n; exit $((n % 2))"
    )


# (mode, target) of the ten tasks: seven over SSH on three server names, three local.
TEN_TASKS = [
    ("ok", "s1"),
    ("ok", "s2"),
    ("ok", "local"),
    ("bad", "s2"),
    ("bad", "s3"),
    ("bad", "local"),
    ("alt", "s1"),
    ("alt", "s2"),
    ("alt", "s3"),
    ("alt", "local"),
]


@dataclass(frozen=True)
class LoadTask:
    """A task of the load tests and how its runs should end."""

    id: int
    name: str
    mode: str


def add_ten_tasks(env: RunEnv, hold: str = "sleep 1") -> list[LoadTask]:
    """Add the three servers and the ten tasks of TEN_TASKS; return them."""
    for server in ("s1", "s2", "s3"):
        env.add_server(server)
    tasks = []
    for mode, target in TEN_TASKS:
        name = unique(f"load-{mode}")
        where = ["--local"] if target == "local" else ["--server", target]
        # "alt" tasks recover before a fifth failure in a row, so they never notify
        notify = ["--notify-after", "5"] if mode == "alt" else []
        command = command_for(mode, env.scratch, name, hold)
        task_id = env.add_task(name, *where, "--overlap", "queue", "--command", command, *notify)
        tasks.append(LoadTask(task_id, name, mode))
    return tasks


def check_stats(env: RunEnv, tasks: list[LoadTask], finished: list[Finished], runs: int) -> None:
    """Each task counts exactly its runs, and its rows, results and stats agree."""
    rows = all_rows(env.db)
    by_task = {t.id: [f for f in finished if f.result.task_id == t.id] for t in tasks}
    for t in tasks:
        mine = [r for r in rows if r.task_id == t.id]
        results = by_task[t.id]
        assert len(mine) == len(results) == runs, (t.name, len(mine), len(results))
        ok, failed = expected_counts(t.mode, runs)
        statuses = sorted(r.status for r in mine)
        assert statuses == sorted(["success"] * ok + ["failed"] * failed), (t.name, statuses)
        assert sorted(f.result.status for f in results) == statuses
        assert {r.flow_run_id for r in mine} == {f.flow_run_id for f in results}
        task = env.task(t.id)
        assert (task.run_count, task.success_count, task.failure_count) == (runs, ok, failed)
        assert task.last_status in statuses
        assert task.last_duration_ms in {f.result.duration_ms for f in results}
        assert task.last_run_at is not None
        assert task.last_run_at >= max(r.started_at for r in mine)
        assert task.next_run_at is None  # no schedule
        if t.mode == "bad":
            # the notification hook judged every run, one after the other
            assert (task.failure_streak, task.failing_since is not None) == (runs, True)
            assert task.failure_notified_at is not None
        if t.mode == "ok":
            assert (task.failure_streak, task.failing_since) == (0, None)


def expected_counts(mode: str, runs: int) -> tuple[int, int]:
    """Return how many of ``runs`` runs of a task in ``mode`` succeed and fail."""
    if mode == "ok":
        return runs, 0
    if mode == "bad":
        return 0, runs
    return (runs + 1) // 2, runs // 2


def check_rows_final(rows: list[TaskHistory]) -> None:
    """Every row is final: no run left ``running``, none lost, none locked out."""
    assert [r.id for r in rows if r.status == "running" or r.finished_at is None] == []
    assert {r.attempt for r in rows} == {1}
    assert lock_errors([r.error for r in rows]) == []


# ----------------------------------------------------------------------------- 5. concurrency


def test_fifty_runs_of_ten_tasks_at_once_count_exactly(
    env: RunEnv, notify_listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    channel = unique("ntfy")
    add_channel(env.db, name=channel, kind="ntfy", url=notify_listener.url, topic="ops")
    release = env.scratch / "release"
    tasks = add_ten_tasks(env, hold=hold_until(release))
    ids = [t.id for t in tasks for _ in range(5)]

    # all 50 hold in their step until all 50 are running, then finish together
    releaser = threading.Thread(target=release_when_running, args=(env.db, release, 50))
    releaser.start()
    started = time.monotonic()
    try:
        finished = run_flows(ids, stagger=0.1)
    finally:
        release.touch()
        releaser.join()
    elapsed = time.monotonic() - started

    rows = all_rows(env.db)
    assert len(rows) == 50
    check_rows_final(rows)
    assert len({f.flow_run_id for f in finished}) == 50
    check_stats(env, tasks, finished, runs=5)
    # they did run together: all of them were running at the same moment
    assert most_at_once(rows) == 50
    assert lock_errors([f.result.error for f in finished]) == []
    assert lock_errors([r.getMessage() for r in caplog.records]) == []

    # five failing runs of a task finishing together are announced once, not five times
    bad = sorted(t.name for t in tasks if t.mode == "bad")
    notices = notify_listener.wait_for(3)
    time.sleep(0.5)
    assert len(notify_listener.requests) == 3
    titles = sorted(r.json()["title"] for r in notices)
    assert [t.split(" ")[1] for t in titles] == bad, titles
    logged = notification_rows(env.db)
    assert sorted((r.task_name, r.event, r.ok) for r in logged) == [
        (name, "failure", True) for name in bad
    ]
    print(f"\n50 runs of 10 tasks at once: {elapsed:.1f} s, {most_at_once(rows)} at once")


def _sync(*args: str) -> dict[str, Any]:
    """Run ``svrctl sync --json ARGS`` as its own process (as cron or a user would)."""
    proc = subprocess.run(
        [SVRCTL_BIN, "sync", "--json", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


async def _deployments(names: list[str]) -> dict[str, tuple[str, str]]:
    async with get_client() as client:
        found = {}
        for name in names:
            d = await client.read_deployment_by_name(f"run-task/{name}")
            found[name] = (str(d.id), d.description or "")
        return found


def _describe(db: Database, tasks: list[LoadTask], words: str) -> None:
    """Change every task's description behind Prefect's back and forget its deployment id."""
    with db.write() as session:
        for t in tasks:
            session.execute(
                update(Task)
                .where(Task.id == t.id)
                .values(description=f"{words} {t.name}", deployment_id=None)
            )


def test_a_sync_while_runs_go_on_neither_fails_and_both_hold(
    env: RunEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    release = env.scratch / "release"
    tasks = add_ten_tasks(env, hold=hold_until(release))  # every run holds until released
    runs = 3
    ids = [t.id for t in tasks for _ in range(runs)]
    _describe(env.db, tasks, "first")

    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["finished"] = run_flows(ids, stagger=0.1)
        except BaseException as exc:
            box["error"] = exc

    runner = threading.Thread(target=go, name="load-runs")
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while len([r for r in all_rows(env.db) if r.status == "running"]) < len(ids):
            assert time.monotonic() < deadline, "the runs did not all start"
            assert runner.is_alive(), box
            time.sleep(0.2)
        # 1. a sync while every run is in its step: 10 deployments to update, ids to store
        first = _sync()
        assert all(r.status == "running" for r in all_rows(env.db))
        # 2. a sync while the runs finish: they write rows, stats and streaks meanwhile
        _describe(env.db, tasks, "second")
        second = subprocess.Popen(
            [SVRCTL_BIN, "sync", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        release.touch()
        out, err = second.communicate(timeout=180)
        assert second.returncode == 0, out + err
        second_report = json.loads(out)
    finally:
        release.touch()
        runner.join(timeout=300)
    assert "error" not in box, box.get("error")
    finished: list[Finished] = box["finished"]

    names = sorted(t.name for t in tasks)
    for report in (first, second_report):
        assert report["ok"] and report["problems"] == [], report
        assert all(a["done"] and a["error"] is None for a in report["actions"]), report
        updated = [a for a in report["actions"] if a["op"] == "update"]
        assert sorted(a["name"] for a in updated) == names, report["actions"]
        assert {a["kind"] for a in updated} == {"deployment"}

    # the runs: every one final and counted once
    rows = all_rows(env.db)
    assert len(rows) == len(ids)
    check_rows_final(rows)
    check_stats(env, tasks, finished, runs=runs)
    assert lock_errors([r.getMessage() for r in caplog.records]) == []

    # the sync: Prefect holds what the database says, and the database Prefect's ids
    deployed = asyncio.run(_deployments(names))
    for t in tasks:
        task = env.task(t.id)
        assert deployed[t.name] == (task.deployment_id, f"second {t.name}")
    assert _sync("--dry-run")["actions"] == []


def test_a_second_open_in_one_process_keeps_its_sqlite_locks(tmp_path: Path) -> None:
    """What the sync test found: another process deleted the WAL under the runs' feet.

    ``svrctl task run`` (and any test that drives the CLI in-process) opens the app
    database twice in one process. If opening it closes a descriptor of the file, the
    process loses its SQLite locks, and the next svrctl process that exits takes itself
    for the last user: it checkpoints and deletes the WAL while the first one still
    writes (``disk I/O error``, or commits lost).
    """
    path = tmp_path / "svrctl.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    first = open_database(url)
    try:
        with first.read() as session:
            assert session.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0
        open_database(url).dispose()  # a second engine on the same file, in this process
        other = (
            "import sys\n"
            "from sqlalchemy import text\n"
            "from svrctl.db.engine import open_database\n"
            "db = open_database(sys.argv[1])\n"
            "with db.write() as s:\n"
            '    s.execute(text("UPDATE tasks SET run_count = run_count + 1"))\n'
            "db.dispose()\n"
        )
        subprocess.run([sys.executable, "-c", other, url], check=True, timeout=60)
        # this process still holds the database: the other one must have left the WAL
        assert path.with_name("svrctl.db-wal").exists()
    finally:
        first.dispose()


# ----------------------------------------------------------------------------- 6. a hanging channel


class SilentListener:
    """A loopback TCP port that accepts connections and never reads or answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Return ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._sock.close()
        for conn in self.accepted:
            conn.close()


# Delivery does not depend on the app database's backend: these run on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def silent() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()


@SQLITE_ONLY
def test_a_hanging_channel_costs_a_run_at_most_the_notification_timeout(
    short_notify: float, env: RunEnv, silent: SilentListener
) -> None:
    gotify, ntfy, hook = unique("gotify"), unique("ntfy"), unique("json")
    add_channel(env.db, name=gotify, kind="gotify", url=silent.url, token="Ahang1", default=True)
    add_channel(env.db, name=ntfy, kind="ntfy", url=silent.url, topic="t", default=True)
    add_channel(
        env.db,
        name=hook,
        kind="apprise",
        url=f"json://127.0.0.1:{silent.port}/hook",
        default=True,
    )
    timeout, notify_timeout = 3, short_notify
    assert env.settings.notify_timeout_seconds == notify_timeout
    task_id = env.add_task(
        unique("stuck"), "--local", "--timeout", str(timeout), "--command", "sleep 30"
    )

    (run,) = run_flows([task_id])

    assert (run.result.status, run.state.is_failed()) == ("timed_out", True)
    # the whole run, its failure notice to three hanging channels included
    assert run.seconds < timeout + notify_timeout + 5, run.seconds
    assert len(silent.accepted) >= 3  # the channels were reached, and never answered
    logged = {r.channel: r for r in notification_rows(env.db)}
    assert set(logged) == {gotify, ntfy, hook}
    assert all(not r.ok and r.error for r in logged.values()), logged
    print(f"\nrun with three hanging channels: {run.seconds:.1f} s")


@SQLITE_ONLY
def test_a_hanging_channel_does_not_starve_a_healthy_one_when_runs_end_together(
    short_notify: float, env: RunEnv, silent: SilentListener, notify_listener: NotifyListener
) -> None:
    hanging, healthy = unique("hangs"), unique("ok")
    add_channel(env.db, name=hanging, kind="ntfy", url=silent.url, topic="t", default=True)
    add_channel(env.db, name=healthy, kind="ntfy", url=notify_listener.url, topic="t", default=True)
    # more runs failing at the same moment than apprise keeps threads for (cores + 4)
    count = 12
    release = env.scratch / "release"
    command = f"{hold_until(release)}; exit 5"
    ids = [
        env.add_task(unique("down"), "--local", "--timeout", "300", "--command", command)
        for _ in range(count)
    ]
    releaser = threading.Thread(target=release_when_running, args=(env.db, release, count))
    releaser.start()
    try:
        finished = run_flows(ids)
    finally:
        release.touch()
        releaser.join()

    assert all(f.result.status == "failed" for f in finished)
    logged = notification_rows(env.db)
    assert sorted(r.channel for r in logged if not r.ok) == [hanging] * count
    failed_healthy = [(r.task_name, r.error) for r in logged if r.channel == healthy and not r.ok]
    assert failed_healthy == []
    assert len(notify_listener.requests) == count
    assert sorted(r.channel for r in logged if r.ok) == [healthy] * count


# ----------------------------------------------------------------------------- 7. disk pressure

# 150,000,000 random bytes in base64 with 76-character lines: 202,631,579 bytes that
# neither SQLite nor PostgreSQL's TOAST compression can shrink much.
HUGE_COMMAND = "head -c 150000000 /dev/urandom | base64 -w 76"
HUGE_BYTES = 200_000_000 + 2_631_579
# What a run may add to the database besides its kept output: rows, indexes, pages.
OVERHEAD_BYTES = 256 * 1024
# Python memory the whole run may hold at its peak, far below the output's size.
PEAK_MEMORY_BYTES = 64 * 1024 * 1024


def database_bytes(db: Database) -> int:
    """Return the app database's size on disk: the SQLite file, or all PostgreSQL tables."""
    url = db.engine.url
    if url.get_backend_name() == "sqlite":
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        assert url.database
        return os.path.getsize(url.database)
    with db.engine.connect() as conn:
        size = conn.execute(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname = current_schema()"
            )
        ).scalar_one()
    return int(size)


def test_a_huge_output_grows_the_database_by_the_output_cap_only(env: RunEnv) -> None:
    limit = env.settings.output_limit_bytes
    env.add_server("s1")
    task_id = env.add_task(unique("flood"), "--server", "s1", "--command", HUGE_COMMAND)
    before = database_bytes(env.db)

    tracemalloc.start()
    try:
        (run,) = run_flows([task_id])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown = database_bytes(env.db) - before

    assert (run.result.status, run.result.exit_code) == ("success", 0)
    (row,) = env.rows(task_id)
    assert (row.output_truncated, row.output_bytes) == (True, HUGE_BYTES)
    omitted = HUGE_BYTES - limit
    marker = f"\n[… {omitted} bytes omitted: output limit {limit} bytes …]\n"
    assert row.output is not None and marker in row.output
    head, tail = row.output.split(marker)
    assert len(head.encode()) + len(tail.encode()) == limit
    assert re.fullmatch(r"[A-Za-z0-9+/=\n]+", head + tail)
    assert run.result.output == row.output
    # the database grew by the kept output and a little more, not by 200 MB
    assert grown <= limit + len(marker.encode()) + OVERHEAD_BYTES, grown
    # and the run never held the whole output in memory
    assert peak < PEAK_MEMORY_BYTES, peak
    backend = make_url(str(env.db.engine.url)).get_backend_name()
    print(
        f"\n{backend}: {HUGE_BYTES / 1e6:.0f} MB of output, database grew "
        f"{grown / 1024:.0f} KiB (cap {limit / 1024:.0f} KiB), peak Python memory "
        f"{peak / 1024 / 1024:.1f} MiB, run {run.seconds:.1f} s"
    )
