"""Views as Prefect artifacts: their content over a seeded history, and the refresh flow."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
)
from prefect.client.schemas.objects import State

from svrctl import runtime
from svrctl.db.engine import Database
from svrctl.db.models import Task, TaskHistory
from svrctl.flows.views import refresh_views
from svrctl.metrics import record_metrics
from svrctl.plugin import Metric
from svrctl.servers import add_server
from svrctl.specs import ServerSpec, TaskSpec
from svrctl.tasks import add_task
from svrctl.views import (
    HISTORY_LIMIT,
    all_views,
    artifact_slug,
    failures_view,
    fleet_view,
    metrics_view,
    sparkline,
    task_history_view,
    views_after_run,
)

NOW = datetime.now(UTC).replace(microsecond=0)
UI = "http://ui.test"


def link(flow_run_id: str | None) -> str | None:
    return f"{UI}/runs/flow-run/{flow_run_id}" if flow_run_id else None


def server(db: Database, name: str, *tags: str, **fields: Any) -> None:
    with db.write() as session:
        row = add_server(session, ServerSpec(name=name, host="10.0.0.1", username="ops",
                                             tags=list(tags)))  # fmt: skip
        for key, value in fields.items():
            setattr(row, key, value)


def task(db: Database, name: str, **spec: Any) -> int:
    fields = {"kind": "local", "command": "true"} | spec
    with db.write() as session:
        row = add_task(session, TaskSpec(name=name, timezone="UTC", **fields))
        session.flush()
        return row.id


def run(db: Database, task_id: int, status: str, minutes_ago: float, **fields: Any) -> str:
    """Insert one finished history row; return its flow run id."""
    flow_run = str(uuid.uuid4())
    at = NOW - timedelta(minutes=minutes_ago)
    with db.write() as session:
        session.add(
            TaskHistory(
                task_id=task_id, flow_run_id=flow_run, triggered_by="schedule", status=status,
                success=status == "success", duration_ms=1500, exit_code=fields.pop("exit", 0),
                started_at=at, finished_at=at + timedelta(seconds=1.5), **fields,
            )
        )  # fmt: skip
    return flow_run


def set_task(db: Database, task_id: int, **fields: Any) -> None:
    with db.write() as session:
        row = session.get(Task, task_id)
        assert row is not None
        for key, value in fields.items():
            setattr(row, key, value)


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the markdown table, as cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def test_artifact_keys_are_what_prefect_accepts() -> None:
    assert artifact_slug("Web_1.example.com") == "web-1-example-com"
    assert artifact_slug("--Über  backup--") == "ber-backup"
    assert artifact_slug("日本") == "x"


def test_sparkline() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5]) == "▁▁▁"
    assert sparkline([0, 100, 50]) == "▁█▅"
    assert sparkline([]) == ""


def test_task_history_view_lists_the_latest_runs_linked(database: Database) -> None:
    task_id = task(database, "backup")
    ids = [run(database, task_id, "success", minutes_ago=100 - i, server_name="h1")
           for i in range(HISTORY_LIMIT + 5)]  # fmt: skip
    broken = run(database, task_id, "failed", minutes_ago=0, server_name="h1", exit=3,
                 error="exit code 3: disk full\nmore")  # fmt: skip
    set_task(database, task_id, run_count=56, success_count=55, failure_count=1)
    with database.read() as session:
        row = session.get(Task, task_id)
        assert row is not None
        view = task_history_view(session, row, link)
    assert view.key == "task-backup-history"
    assert "56 runs, 55 succeeded, 1 failed" in view.markdown
    rows = table_rows(view.markdown)
    assert len(rows) == HISTORY_LIMIT
    assert rows[0][0].endswith(f"]({UI}/runs/flow-run/{broken})")
    assert rows[0][1:] == ["failed", "h1", "1", "schedule", "1500 ms", "3",
                           "exit code 3: disk full"]  # fmt: skip
    # newest first: the oldest runs beyond the limit are left out
    assert rows[-1][0].endswith(f"/{ids[6]})")
    assert all(ids[i] not in view.markdown for i in range(6))


def test_fleet_view(database: Database) -> None:
    seen = NOW - timedelta(days=2)
    server(database, "web-1", "web", os_type="debian", os_version="12", last_seen=seen)
    server(database, "web-2", "web")
    server(database, "db-1")
    fan = task(database, "uptime", kind="ssh", tag="web", command="uptime")
    dump = task(database, "dump", kind="ssh", server="db-1", command="pg_dumpall")
    set_task(database, fan, next_run_at=NOW + timedelta(minutes=5))
    set_task(database, dump, next_run_at=NOW + timedelta(hours=2))
    ok = run(database, fan, "success", minutes_ago=10, server_name="web-1")
    run(database, fan, "failed", minutes_ago=30, server_name="web-2", exit=1)
    bad = run(database, fan, "failed", minutes_ago=9, server_name="web-2", exit=1)
    run(database, dump, "timed_out", minutes_ago=60, server_name="db-1", exit=None)

    with database.read() as session:
        view = fleet_view(session, link)
    assert view.key == "fleet"
    rows = {r[0]: r for r in table_rows(view.markdown)}
    assert list(rows) == ["db-1", "web-1", "web-2"]
    web1, web2, db = rows["web-1"], rows["web-2"], rows["db-1"]
    assert web1[1] == "ops@10.0.0.1:22"
    assert web1[4] == "debian 12"
    # last seen: the latest time a command ran there, newer than the probe's
    assert web1[3] == f"{NOW - timedelta(minutes=10) + timedelta(seconds=1.5):%Y-%m-%d %H:%M:%S}"
    assert web1[5] == f"uptime: [✓ success]({UI}/runs/flow-run/{ok})"
    assert web2[5] == f"uptime: [✗ failed]({UI}/runs/flow-run/{bad})"  # the latest only
    assert db[5].startswith("dump: [✗ timed_out]")
    # a timed-out run never saw an exit: the server was not seen
    assert db[3] == "-"
    assert web1[6] == f"{NOW + timedelta(minutes=5):%Y-%m-%d %H:%M:%S}"
    assert db[6] == f"{NOW + timedelta(hours=2):%Y-%m-%d %H:%M:%S}"


def test_failures_view(database: Database) -> None:
    good = task(database, "fine")
    bad = task(database, "backup")
    run(database, good, "success", minutes_ago=5)
    run(database, bad, "failed", minutes_ago=50, exit=2, error="exit code 2: old")
    last = run(database, bad, "failed", minutes_ago=20, exit=2, error="exit code 2: no space")
    since = NOW - timedelta(minutes=50)
    set_task(database, good, last_status="success")
    set_task(database, bad, last_status="failed", failing_since=since, failure_streak=2,
             last_run_at=NOW - timedelta(minutes=20))  # fmt: skip
    with database.read() as session:
        view = failures_view(session, link)
    assert view.key == "failures"
    (row,) = table_rows(view.markdown)
    assert row[0] == "backup"
    assert row[1] == "failed"
    assert row[2] == f"{since:%Y-%m-%d %H:%M:%S}"
    assert row[3] == "2"
    assert row[4].endswith(f"]({UI}/runs/flow-run/{last})")
    assert row[5] == "exit code 2: no space"

    set_task(database, bad, last_status="success", failing_since=None, failure_streak=0)
    with database.read() as session:
        assert "No task is failing" in failures_view(session, link).markdown


def test_metrics_view_with_trend(database: Database) -> None:
    for i, value in enumerate([10, 20, 30, 40]):
        record_metrics(
            database, server="web-1", plugin="health", flow_run_id=f"run-{i}",
            at=NOW - timedelta(minutes=40 - 10 * i),
            metrics=[Metric(name="disk_used_percent", value=value, unit="%",
                            labels={"mount": "/"}),
                     Metric(name="load1", value=0.5, unit="")],
        )  # fmt: skip
    with database.read() as session:
        view = metrics_view(session, "web-1", link)
        assert "No figures" in metrics_view(session, "other", link).markdown
    assert view.key == "metrics-web-1"
    rows = {r[0]: r for r in table_rows(view.markdown)}
    disk = rows["disk_used_percent"]
    assert disk[1:7] == ["mount=/", "40", "%", "▁▃▆█", "10", "40"]
    assert disk[7].endswith(f"]({UI}/runs/flow-run/run-3)")
    assert rows["load1"][4] == "▁▁▁▁"


def test_views_after_a_run_and_all_views(database: Database) -> None:
    server(database, "web-1")
    plain = task(database, "plain")
    health = task(database, "health", kind="plugin", plugin="health", server="web-1",
                  command=None)  # fmt: skip
    flow_run = run(database, health, "success", minutes_ago=1, server_name="web-1")
    record_metrics(database, server="web-1", plugin="health", flow_run_id=flow_run,
                   metrics=[Metric(name="load1", value=1.0)])  # fmt: skip
    with database.read() as session:
        after_plain = [v.key for v in views_after_run(session, plain, None, link)]
        after_health = [v.key for v in views_after_run(session, health, flow_run, link)]
        everything = [v.key for v in all_views(session, link)]
        assert views_after_run(session, 10_000, None, link) == []
    assert after_plain == ["task-plain-history", "fleet", "failures"]
    assert after_health == ["task-health-history", "fleet", "failures", "metrics-web-1"]
    assert everything == ["fleet", "failures", "task-health-history", "task-plain-history",
                          "metrics-web-1"]  # fmt: skip


def read_latest(key: str) -> str | None:
    async def read() -> str | None:
        async with get_client() as client:
            found = await client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(
                    key=ArtifactCollectionFilterKey(any_=[key])
                )
            )
            return str(found[0].data) if found else None

    return asyncio.run(read())


def test_refresh_views_flow_publishes_every_view(
    prefect_api: str, svrctl_env: Any, database: Database
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name = f"nightly-{suffix}"
    task_id = task(database, name)
    flow_run = run(database, task_id, "failed", minutes_ago=3, exit=4, error="exit code 4: x")
    set_task(database, task_id, last_status="failed", failure_streak=1)
    runtime.reset()
    try:
        state: State[Any] = asyncio.run(refresh_views(return_state=True))
    finally:
        runtime.reset()
    assert state.is_completed(), state.message
    assert state.result() == 3  # fleet, failures and the one task's history
    history = read_latest(f"task-nightly-{suffix}-history")
    assert history is not None and f"/runs/flow-run/{flow_run}" in history
    failures = read_latest("failures")
    assert failures is not None and f"| {name} | failed |" in failures
    fleet = read_latest("fleet")
    assert fleet is not None and f"{name}: [✗ failed]" in fleet
