"""The metrics table: recording plugin figures and ``svrctl metrics SERVER``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Invoke
from sqlalchemy import text

from svrctl.db.engine import Database
from svrctl.exceptions import BadInputError
from svrctl.metrics import parse_since, read_metrics, record_metrics
from svrctl.plugin import Metric

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _seed(database: Database) -> None:
    for hours_ago, mem in ((50, 10.0), (5, 20.0), (1, 30.0)):
        record_metrics(
            database,
            server="web-1",
            plugin="health",
            metrics=[
                Metric(name="memory_percent", value=mem, unit="%"),
                Metric(name="disk_percent", value=40 + mem, unit="%", labels={"mount": "/"}),
            ],
            at=NOW - timedelta(hours=hours_ago),
        )
    record_metrics(
        database,
        server="web-2",
        plugin="health",
        metrics=[Metric(name="memory_percent", value=99.0, unit="%")],
        at=NOW - timedelta(hours=1),
    )


def test_parse_since() -> None:
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("1d", NOW) == NOW - timedelta(days=1)
    assert parse_since("2w", NOW) == NOW - timedelta(days=14)
    assert parse_since("2026-11-20T08:00+00:00", NOW) == datetime(2026, 11, 20, 8, tzinfo=UTC)
    for bad in ("yesterday", "5 parsecs", "2026-11-20T08:00", ""):
        with pytest.raises(BadInputError) as info:
            parse_since(bad, NOW)
        assert info.value.field == "since"


def test_read_a_metric_of_a_server_over_time(database: Database) -> None:
    _seed(database)
    with database.read() as session:
        rows = read_metrics(session, "web-1", name="memory_percent", since=NOW - timedelta(days=1))
        assert [r.value for r in rows] == [20.0, 30.0]  # oldest first, 50 h ago left out
        every = read_metrics(session, "web-1")
        assert len(every) == 6
        assert {r.server for r in every} == {"web-1"}
        disk = [r for r in every if r.name == "disk_percent"]
        assert disk[0].labels == {"mount": "/"} and disk[0].unit == "%"


def test_the_server_name_time_index_serves_the_query(database: Database) -> None:
    if database.engine.dialect.name != "sqlite":
        pytest.skip("the query plan is checked on SQLite")
    with database.read() as session:
        plan = session.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT * FROM metrics WHERE server = 'a' AND name = 'b' "
                "AND time >= '2026-01-01' ORDER BY time DESC"
            )
        ).all()
    assert any("ix_metrics_server_name_time" in str(row) for row in plan), plan


def test_cli_prints_a_table_and_json(svrctl: Invoke, database: Database) -> None:
    now = datetime.now(UTC)
    record_metrics(
        database,
        server="web-1",
        plugin="health",
        metrics=[Metric(name="memory_percent", value=42.5, unit="%")],
        at=now - timedelta(minutes=10),
    )
    record_metrics(
        database,
        server="web-1",
        plugin="health",
        metrics=[Metric(name="memory_percent", value=12.0, unit="%")],
        at=now - timedelta(days=3),
    )
    r = svrctl("metrics", "web-1")
    assert r.exit_code == 0, r.output
    assert "memory_percent" in r.stdout and "42.5" in r.stdout and "12" not in r.stdout.split()
    data = json.loads(svrctl("metrics", "web-1", "--since", "1w", "--json").stdout)
    assert [d["value"] for d in data] == [12.0, 42.5]
    assert data[0]["plugin"] == "health" and data[0]["unit"] == "%"
    only = json.loads(svrctl("metrics", "web-1", "--name", "cpu", "--json").stdout)
    assert only == []


def test_cli_says_when_there_is_nothing(svrctl: Invoke) -> None:
    r = svrctl("metrics", "nowhere")
    assert r.exit_code == 0
    assert "no metrics for nowhere" in r.stderr


def test_cli_bad_since(svrctl: Invoke) -> None:
    r = svrctl("metrics", "web-1", "--since", "soon")
    assert r.exit_code == 2
    assert "invalid --since 'soon'" in r.output


def test_purge_keeps_recent_figures(database: Database) -> None:
    from svrctl.metrics import purge_metrics

    now = datetime.now(UTC)
    for days in (40, 31, 29, 1):
        record_metrics(
            database,
            server="web-1",
            plugin="health",
            metrics=[Metric(name="memory_percent", value=float(days))],
            at=now - timedelta(days=days),
        )
    assert purge_metrics(database, 30, batch=1) == 2
    with database.read() as session:
        assert [r.value for r in read_metrics(session, "web-1")] == [29.0, 1.0]
    assert purge_metrics(database, 30) == 0


def test_history_retention_flow_purges_metrics_too(
    prefect_api: str, svrctl: Invoke, database: Database
) -> None:
    import asyncio

    from svrctl import runtime
    from svrctl.flows.maintenance import history_retention

    old = datetime.now(UTC) - timedelta(days=10)
    record_metrics(
        database, server="s", plugin="health", metrics=[Metric(name="x", value=1)], at=old
    )
    record_metrics(database, server="s", plugin="health", metrics=[Metric(name="x", value=2)])
    runtime.reset()
    try:
        asyncio.run(history_retention(days=5))
    finally:
        runtime.reset()
    with database.read() as session:
        assert [r.value for r in read_metrics(session, "s")] == [2.0]
