"""History at 1,000,000 rows on SQLite and PostgreSQL: `task history`, `task stats`, retention.

Usage (one Row per backend)::

    from bench import history_scale
    rows.extend(history_scale.run(args.quick))

or alone: ``.venv/bin/python -m bench.history_scale [--quick]``. PostgreSQL is
reached through ``SVRCTL_BENCH_PG_URL`` or else ``SVRCTL_TEST_PG_URL`` (a
SQLAlchemy URL of a role with CREATEDB); the benchmark creates a fresh database
there and drops it at the end. Without either, the PostgreSQL row says so and
counts as not met.

Per backend: migrate a fresh app database, add 20 servers and 100 tasks with
svrctl's own code, time ``svrctl task history task-000`` and ``svrctl task stats
task-000`` on the empty table (the baseline), bulk-insert the history (setup, not
timed: executemany on SQLite, COPY on PostgreSQL), time the same two commands
again, then purge the oldest 90 % with ``purge_history`` and check what is left.
The commands run as whole click commands in this process (``CliRunner``), each
invocation opening the database as the CLI does; the functions they call
(``recent_history``, ``task_stats``) are also timed alone on an open session.
Every answer is checked against the data inserted.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Row, median, p95, timed

GOAL_MS = 50.0
GOAL_PURGE_S = 30.0
HOT = "task-000"  # the task with the most history: 10 % of all rows
TASKS = 100
SERVERS = 20
SPAN_DAYS = 100  # history spans 100 days, evenly
KEEP_DAYS = 10  # retention that keeps the newest 10 % of the rows
MARGIN = timedelta(hours=6)  # no row this close to the retention cut
STATUSES = {  # status: share of the rows
    "success": 0.90,
    "failed": 0.04,
    "skipped": 0.03,
    "timed_out": 0.01,
    "missed": 0.01,
    "crashed": 0.005,
    "cancelled": 0.005,
}
FAILURES = ("failed", "timed_out", "crashed")
COLUMNS = (
    "id",
    "created",
    "updated",
    "task_id",
    "flow_run_id",
    "server_name",
    "attempt",
    "triggered_by",
    "status",
    "success",
    "exit_code",
    "output",
    "output_truncated",
    "output_bytes",
    "error",
    "error_truncated",
    "error_bytes",
    "duration_ms",
    "started_at",
    "finished_at",
)


@dataclass
class HotRow:
    """What the checks need of one history row of the hot task."""

    id: int
    started_at: datetime
    status: str
    duration_ms: int


@dataclass
class Data:
    """What was inserted: the hot task's rows and every task's expected counters."""

    rows: int = 0
    old: int = 0
    hot: list[HotRow] = field(default_factory=list)
    counters: dict[int, list[Any]] = field(default_factory=dict)


def _pg_admin_url() -> str | None:
    return os.environ.get("SVRCTL_BENCH_PG_URL") or os.environ.get("SVRCTL_TEST_PG_URL")


def _rows(
    task_ids: list[int], servers: dict[int, str], total: int, now: datetime
) -> Iterator[tuple[Any, ...]]:
    """Yield ``total`` history rows, oldest first: 90 % older than KEEP_DAYS, 10 % newer."""
    rng = random.Random(6)
    statuses, weights = list(STATUSES), list(STATUSES.values())
    old = total - total // 10
    old_start, old_span = now - timedelta(days=SPAN_DAYS), timedelta(days=SPAN_DAYS - KEEP_DAYS)
    new_start = now - timedelta(days=KEEP_DAYS) + MARGIN
    new_span = timedelta(days=KEEP_DAYS) - MARGIN - timedelta(minutes=1)
    old_span -= MARGIN
    hot_id = task_ids[0]
    for i in range(total):
        if i < old:
            started = old_start + old_span * (i / old)
        else:
            started = new_start + new_span * ((i - old) / (total - old))
        task_id = hot_id if rng.random() < 0.1 else task_ids[1 + rng.randrange(len(task_ids) - 1)]
        status = rng.choices(statuses, weights)[0]
        if status == "success":
            duration = int(rng.lognormvariate(7.2, 0.6))  # ~1.3 s
            output = f"ok: {rng.randrange(1, 5000)} files, {rng.randrange(1, 900)} MB\n"
            error, code = None, 0
        elif status == "timed_out":
            duration, output, code = 300_000, "", None
            error = "timed out after 300 s"
        elif status in ("failed", "crashed"):
            duration = int(rng.lognormvariate(6.5, 1.0))
            output = "rsync: connection unexpectedly closed\n"
            error, code = f"exit status {rng.choice((1, 2, 23, 255))}", 1
        elif status == "skipped":
            duration, output, code = rng.randrange(20, 200), "", 1
            error = "skipped: the --only-if check exited 1"
        else:
            duration, output, error, code = 0, "", f"{status}: see the flow run", None
        finished = started + timedelta(milliseconds=duration)
        yield (
            i + 1,
            finished,
            finished,
            task_id,
            str(uuid.UUID(int=rng.getrandbits(128))),
            servers[task_id],
            1,
            "schedule",
            status,
            status == "success",
            code,
            output,
            False,
            len(output),
            error,
            False,
            len(error or ""),
            duration,
            started,
            finished,
        )


def _seed(url: str) -> tuple[list[int], dict[int, str]]:
    """Add the servers and tasks with svrctl's own code; return task ids and their servers."""
    from svrctl.db.engine import open_database
    from svrctl.servers import add_server
    from svrctl.specs import ServerSpec, TaskSpec
    from svrctl.tasks import add_task

    db = open_database(url)
    ids: list[int] = []
    servers: dict[int, str] = {}
    try:
        with db.write() as s:
            for n in range(SERVERS):
                add_server(
                    s, ServerSpec(name=f"srv-{n:02d}", host=f"10.0.0.{n + 1}", username="ops")
                )
            for n in range(TASKS):
                server = f"srv-{n % SERVERS:02d}"
                spec = TaskSpec(
                    name=f"task-{n:03d}",
                    kind="ssh",
                    server=server,
                    command="/usr/local/bin/job",
                    schedule="0 */5 * * * *",
                    timezone="UTC",
                )
                task_id = add_task(s, spec).id
                ids.append(task_id)
                servers[task_id] = server
    finally:
        db.dispose()
    return ids, servers


def _insert(url: str, rows: Iterator[tuple[Any, ...]], data: Data, hot_id: int) -> None:
    """Bulk-insert the rows (executemany on SQLite, COPY on PostgreSQL), noting what went in."""
    from sqlalchemy import create_engine

    from svrctl.db.engine import make_engine
    from svrctl.db.models import TaskHistory

    def note(row: tuple[Any, ...]) -> tuple[Any, ...]:
        data.rows += 1
        task_id, status, duration, started, finished = row[3], row[8], row[17], row[18], row[19]
        if task_id == hot_id:
            data.hot.append(HotRow(row[0], started, status, duration))
        c = data.counters.setdefault(task_id, [0, 0, 0, None, None, None])
        c[0] += 1
        c[1] += status == "success"
        c[2] += status in FAILURES
        c[3:] = [finished, status, duration]
        return row

    sqlite = url.startswith("sqlite")
    engine = make_engine(url) if sqlite else create_engine(url)
    try:
        if sqlite:
            stamp = TaskHistory.__table__.c.started_at.type.bind_processor(engine.dialect)
            assert stamp is not None
            names, marks = ", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))
            sql = f"INSERT INTO task_history ({names}) VALUES ({marks})"  # noqa: S608
            chunk: list[tuple[Any, ...]] = []
            with engine.begin() as conn:
                for row in rows:
                    r = note(row)
                    chunk.append(
                        (*r[:1], stamp(r[1]), stamp(r[2]), *r[3:18], stamp(r[18]), stamp(r[19]))
                    )
                    if len(chunk) == 20_000:
                        conn.exec_driver_sql(sql, chunk)
                        chunk = []
                if chunk:
                    conn.exec_driver_sql(sql, chunk)
            return
        raw = engine.raw_connection()
        try:
            pg: Any = raw.driver_connection
            with pg.cursor() as cur:
                with cur.copy(f"COPY task_history ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        r = note(row)
                        copy.write_row(
                            (
                                *r[:1],
                                *(t.replace(tzinfo=None) for t in r[1:3]),
                                *r[3:18],
                                *(t.replace(tzinfo=None) for t in r[18:]),
                            )
                        )
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence('task_history', 'id'), %s)", (data.rows,)
                )
            pg.commit()
            # what autovacuum does after a bulk load: statistics and the visibility map
            pg.autocommit = True
            pg.execute("VACUUM ANALYZE task_history")
        finally:
            raw.close()
    finally:
        engine.dispose()


def _set_counters(url: str, data: Data) -> None:
    """Put the counters the inserted runs would have left into the task rows."""
    from sqlalchemy import update

    from svrctl.db.engine import open_database
    from svrctl.db.models import Task

    db = open_database(url)
    try:
        with db.write() as s:
            for task_id, (runs, ok, bad, last_at, last_status, last_ms) in data.counters.items():
                s.execute(
                    update(Task)
                    .where(Task.id == task_id)
                    .values(
                        run_count=runs,
                        success_count=ok,
                        failure_count=bad,
                        last_run_at=last_at,
                        last_status=last_status,
                        last_duration_ms=last_ms,
                    )
                )
    finally:
        db.dispose()


def _check_counters(url: str, data: Data) -> bool:
    """Tell whether every task row still has the counters of all the runs inserted."""
    from sqlalchemy import select

    from svrctl.db.engine import open_database
    from svrctl.db.models import Task

    db = open_database(url)
    try:
        with db.read() as s:
            found = {
                t.id: [
                    t.run_count,
                    t.success_count,
                    t.failure_count,
                    t.last_run_at,
                    t.last_status,
                    t.last_duration_ms,
                ]
                for t in s.scalars(select(Task))
            }
    finally:
        db.dispose()
    return all(found.get(k) == v for k, v in data.counters.items())


def _expected_stats(data: Data, since: datetime) -> dict[str, Any]:
    """Compute what `task stats` must say from the rows inserted, in plain Python."""
    rows = [r for r in data.hot if r.started_at >= since]
    by_status = Counter(r.status for r in rows)
    ok = by_status["success"]
    bad = sum(by_status[s] for s in FAILURES)
    durations = sorted(r.duration_ms for r in rows if r.status == "success" or r.status in FAILURES)

    def rank(q: float) -> int | None:
        return durations[math.ceil(q * len(durations)) - 1] if durations else None

    def last(statuses: tuple[str, ...]) -> str | None:
        times = [r.started_at for r in rows if r.status in statuses]
        return max(times).isoformat() if times else None

    return {
        "runs": len(rows),
        "by_status": dict(sorted(by_status.items())),
        "successes": ok,
        "failures": bad,
        "success_rate": round(ok / (ok + bad), 4) if ok + bad else None,
        "duration_median_ms": rank(0.5),
        "duration_p95_ms": rank(0.95),
        "last_success_at": last(("success",)),
        "last_failure_at": last(FAILURES),
    }


def _check_stats(out: str, data: Data) -> bool:
    """Tell whether `task stats --json` output matches the rows inserted."""
    import json

    got = json.loads(out)
    want = _expected_stats(data, datetime.fromisoformat(got["since"]))
    return all(got[k] == v for k, v in want.items())


def _check_history(out: str, data: Data, limit: int = 20) -> bool:
    """Tell whether the `task history` table lists the hot task's newest rows, newest first."""
    newest = sorted(data.hot, key=lambda r: (r.started_at, r.id), reverse=True)[:limit]
    lines = out.splitlines()
    if not newest:
        return lines == ["(none)"]
    return [int(line.split()[0]) for line in lines[1:]] == [r.id for r in newest]


def _sizes(url: str) -> dict[str, int]:
    """Return the database's size in bytes (SQLite: file, WAL and shared memory)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        parts = {s: Path(f"{path}{s}") for s in ("", "-wal", "-shm")}
        return {"file" + s: p.stat().st_size if p.exists() else 0 for s, p in parts.items()} | {
            "total": sum(p.stat().st_size for p in parts.values() if p.exists())
        }
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "total": conn.scalar(text("SELECT pg_database_size(current_database())")),
                "task_history": conn.scalar(text("SELECT pg_total_relation_size('task_history')")),
            }
    finally:
        engine.dispose()


def _vacuum(url: str, full: bool = False) -> float:
    """VACUUM the database (PostgreSQL: task_history, FULL when asked); return seconds."""
    from sqlalchemy import create_engine

    sqlite = url.startswith("sqlite")
    engine = create_engine(url, isolation_level="AUTOCOMMIT") if not sqlite else create_engine(url)
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            if sqlite:
                conn.exec_driver_sql("VACUUM")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                conn.exec_driver_sql(f"VACUUM {'FULL ' if full else ''}ANALYZE task_history")
    finally:
        engine.dispose()
    return time.perf_counter() - start


class Commands:
    """The two commands as the CLI runs them, and the functions under them."""

    def __init__(self, url: str, home: Path) -> None:
        from click.testing import CliRunner

        from svrctl.cli import cli

        self.url, self.home, self.cli, self.runner = url, home, cli, CliRunner()

    def cli_out(self, *args: str) -> str:
        """Run ``svrctl ARGS`` in this process; return its output, failing on a non-zero exit."""
        result = self.runner.invoke(
            self.cli, list(args), prog_name="svrctl", catch_exceptions=False
        )
        if result.exit_code != 0:
            raise RuntimeError(
                f"svrctl {' '.join(args)} exited {result.exit_code}: {result.output}"
            )
        return result.output

    def measure(self, repeat: int, data: Data) -> dict[str, Any]:
        """Time both commands (interleaved) and their functions; check every answer."""
        from svrctl.db.engine import open_database
        from svrctl.tasks import get_task, recent_history, task_stats

        history: list[float] = []
        stats: list[float] = []
        cpu: dict[str, list[float]] = {"history": [], "stats": []}
        right = True
        for _ in range(repeat):
            start, used = time.perf_counter(), time.process_time()
            out = self.cli_out("task", "history", HOT)
            history.append(time.perf_counter() - start)
            cpu["history"].append(time.process_time() - used)
            right = right and _check_history(out, data)
            runs = {_expected_stats(data, _since())["runs"]}
            start, used = time.perf_counter(), time.process_time()
            out = self.cli_out("task", "stats", HOT)
            stats.append(time.perf_counter() - start)
            cpu["stats"].append(time.process_time() - used)
            runs.add(_expected_stats(data, _since())["runs"])  # the window moved meanwhile
            right = right and any(f"  runs:          {n}" in out for n in runs)
        right = right and _check_stats(self.cli_out("task", "stats", HOT, "--json"), data)
        db = open_database(self.url)
        try:
            with db.read() as s:
                task = get_task(s, HOT)
                fn_history = timed(lambda: recent_history(s, task), repeat)
                fn_stats = timed(lambda: task_stats(s, task), repeat)
        finally:
            db.dispose()
        return {
            "load_average": [round(x, 1) for x in os.getloadavg()],
            "history_ms": _figures(history),
            "stats_ms": _figures(stats),
            "history_cpu_ms": _figures(cpu["history"]),
            "stats_cpu_ms": _figures(cpu["stats"]),
            "recent_history_fn_ms": _figures(fn_history),
            "task_stats_fn_ms": _figures(fn_stats),
            "right": right,
        }


def _since(days: int = 7) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def _figures(values: list[float]) -> dict[str, float]:
    return {"median": round(median(values) * 1000, 2), "p95": round(p95(values) * 1000, 2)}


def _environ(home: Path, url: str) -> dict[str, str | None]:
    """Point svrctl's settings at ``url``; return the values to put back."""
    from svrctl import runtime

    wanted = {"SVRCTL_HOME": str(home), "SVRCTL_DATABASE_URL": url, "SVRCTL_TIMEZONE": "UTC"}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    runtime.reset()
    return saved


def _restore(saved: dict[str, str | None]) -> None:
    from svrctl import runtime

    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    runtime.reset()


def _log(text: str) -> None:
    print(f"  6 {text}", file=sys.stderr, flush=True)


def measure_backend(url: str, work: Path, total: int, repeat: int) -> dict[str, Any]:
    """Run the whole benchmark on one migrated-from-nothing database; return its figures."""
    from svrctl.db.engine import open_database
    from svrctl.db.migrate import upgrade
    from svrctl.execution.reconcile import purge_history

    upgrade(url)
    task_ids, servers = _seed(url)
    saved = _environ(work / "home", url)
    try:
        commands = Commands(url, work / "home")
        data = Data()
        size_empty = _sizes(url)
        _log("baseline on the empty table ...")
        baseline = commands.measure(repeat, data)
        _log(f"inserting {total:,} rows ...")
        start = time.perf_counter()
        _insert(url, _rows(task_ids, servers, total, datetime.now(UTC)), data, task_ids[0])
        insert_s = time.perf_counter() - start
        data.old = total - total // 10
        _set_counters(url, data)
        size_full = _sizes(url)
        _log(f"inserted in {insert_s:.1f} s; measuring ...")
        full = commands.measure(repeat, data)
        stats_before = commands.cli_out("task", "stats", HOT, "--json")
        _log(f"purging {data.old:,} rows ...")
        db = open_database(url)
        try:
            start = time.perf_counter()
            removed = purge_history(db, KEEP_DAYS)
            purge_s = time.perf_counter() - start
            load = [round(x, 1) for x in os.getloadavg()]
            from sqlalchemy import func, select

            from svrctl.db.models import TaskHistory

            with db.read() as s:
                left = s.scalar(select(func.count()).select_from(TaskHistory))
                oldest = s.scalar(select(func.min(TaskHistory.started_at)))
        finally:
            db.dispose()
        _log(f"purged {removed:,} in {purge_s:.1f} s")
        cut = datetime.now(UTC) - timedelta(days=KEEP_DAYS)
        data.hot = [r for r in data.hot if r.started_at >= cut]
        stats_after = commands.cli_out("task", "stats", HOT, "--json")
        purge_right = (
            removed == data.old
            and left == total - data.old
            and oldest is not None
            and oldest >= cut
            and _check_counters(url, data)
            and _check_stats(stats_before, data)
            and _check_stats(stats_after, data)
        )
        after = commands.measure(repeat, data)
        size_purged = _sizes(url)
        vacuum_s = _vacuum(url)
        size_vacuumed = _sizes(url)
        result: dict[str, Any] = {
            "rows": total,
            "insert_s": round(insert_s, 1),
            "baseline": baseline,
            "full": full,
            "after_purge": after,
            "purge": {
                "load_average": load,
                "removed": removed,
                "left": left,
                "seconds": round(purge_s, 2),
                "right": purge_right,
            },
            "size_bytes": {
                "empty": size_empty,
                "full": size_full,
                "purged": size_purged,
                "vacuumed": size_vacuumed,
            },
            "vacuum_s": round(vacuum_s, 2),
        }
        if not url.startswith("sqlite"):
            result["vacuum_full_s"] = round(_vacuum(url, full=True), 2)
            result["size_bytes"]["vacuum_full"] = _sizes(url)
        return result
    finally:
        _restore(saved)


def _row(backend: str, total: int, r: dict[str, Any]) -> Row:
    """Turn one backend's figures into a table row."""
    base, full, purge = r["baseline"], r["full"], r["purge"]
    mb = {k: v["total"] / 1e6 for k, v in r["size_bytes"].items()}
    cmds_met = all(
        full[k]["median"] <= GOAL_MS and full[k]["p95"] <= GOAL_MS
        for k in ("history_ms", "stats_ms")
    )
    right = base["right"] and full["right"] and r["after_purge"]["right"] and purge["right"]
    sizes = f"load {full['load_average'][0]:.1f}; CPU: "
    sizes += f"history {full['history_cpu_ms']['median']:.0f} ms, "
    sizes += f"stats {full['stats_cpu_ms']['median']:.0f} ms; "
    sizes += f"size {mb['empty']:.1f} -> {mb['full']:.0f} MB, purged {mb['purged']:.0f} MB, "
    sizes += f"vacuumed {mb['vacuumed']:.0f} MB"
    if "vacuum_full" in mb:
        sizes += f", VACUUM FULL {mb['vacuum_full']:.0f} MB"
    return Row(
        name=f"6 history at {total:,} rows ({backend})",
        baseline=f"empty table: history {base['history_ms']['median']:.1f} ms, "
        f"stats {base['stats_ms']['median']:.1f} ms",
        ours=f"history {full['history_ms']['median']:.1f} ms "
        f"(p95 {full['history_ms']['p95']:.1f}), "
        f"stats {full['stats_ms']['median']:.1f} ms (p95 {full['stats_ms']['p95']:.1f}); "
        f"purge of {purge['removed']:,}: {purge['seconds']:.1f} s",
        figure=sizes,
        goal=f"history, stats median and p95 <= {GOAL_MS:.0f} ms; purge of 90 % <= "
        f"{GOAL_PURGE_S:.0f} s; right answers",
        met=cmds_met and purge["seconds"] <= GOAL_PURGE_S and right,
        details=r,
    )


def run(quick: bool) -> list[Row]:
    """Run the benchmark on SQLite and on PostgreSQL; one Row each."""
    total = 50_000 if quick else 1_000_000
    repeat = 10 if quick else 30
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _log("SQLite ...")
        url = f"sqlite:///{work / 'sqlite' / 'svrctl.db'}"
        rows.append(_row("SQLite", total, measure_backend(url, work / "sqlite", total, repeat)))
        admin = _pg_admin_url()
        if admin is None:
            rows.append(
                Row(
                    name=f"6 history at {total:,} rows (PostgreSQL)",
                    baseline="-",
                    ours="not measured: set SVRCTL_BENCH_PG_URL or SVRCTL_TEST_PG_URL",
                    figure="-",
                    goal="-",
                    met=False,
                )
            )
            return rows
        from fixtures.postgres import PgDatabaseFactory

        factory = PgDatabaseFactory(admin)
        url = factory()
        try:
            _log("PostgreSQL ...")
            rows.append(_row("PostgreSQL", total, measure_backend(url, work / "pg", total, repeat)))
        finally:
            factory.drop_all()
    return rows


if __name__ == "__main__":
    import json
    from dataclasses import asdict

    from bench.common import print_table

    result = run("--quick" in sys.argv[1:])
    print_table(result)
    print(json.dumps([asdict(r) for r in result], indent=2, default=str))
    sys.exit(0 if all(r.met for r in result) else 1)
