"""``svrctl task stats``: a task's figures over a window, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import Invoke
from sqlalchemy import update

from svrctl.db.engine import open_database
from svrctl.db.models import Task, TaskHistory, utcnow


@pytest.fixture
def now(svrctl: Invoke) -> datetime:
    """Two tasks; returns the time their history is written relative to."""
    for name in ("backup", "other"):
        assert svrctl("task", "add", name, "--local", "--command", "true").exit_code == 0
    return utcnow()


def _add_rows(url: str, task: str, rows: list[dict[str, Any]]) -> None:
    db = open_database(url)
    try:
        with db.write() as s:
            task_id = s.query(Task.id).filter(Task.name == task).scalar()
            s.add_all(TaskHistory(task_id=task_id, **row) for row in rows)
    finally:
        db.dispose()


def _row(status: str, at: datetime, duration_ms: int | None) -> dict[str, Any]:
    return {
        "status": status,
        "success": status == "success",
        "started_at": at,
        "finished_at": None if status == "running" else at,
        "duration_ms": duration_ms,
    }


@pytest.fixture
def history(svrctl: Invoke, database_url: str, now: datetime) -> datetime:
    """Rows in and out of the default 7-day window; returns ``now``."""
    hour = timedelta(hours=1)
    rows = [_row("success", now - (i + 2) * hour, 100 * (i + 1)) for i in range(10)]
    rows += [
        _row("failed", now - 30 * hour, 2000),
        _row("timed_out", now - 20 * hour, 300_000),
        # neither counts in the rate nor in the durations
        _row("skipped", now - 3 * hour, 50),
        _row("missed", now - 4 * hour, 0),
        _row("running", now - 0.5 * hour, None),
        # before the default window: only --days 10 sees them
        _row("success", now - timedelta(days=8), 1),
        _row("crashed", now - timedelta(days=9), 5),
    ]
    _add_rows(database_url, "backup", rows)
    # another task's rows never count
    _add_rows(database_url, "other", [_row("failed", now - hour, 7)] * 3)
    db = open_database(database_url)
    try:
        with db.write() as s:
            s.execute(
                update(Task)
                .where(Task.name == "backup")
                .values(run_count=40, success_count=30, failure_count=9)
            )
    finally:
        db.dispose()
    return now


def _stats(svrctl: Invoke, *args: str) -> dict[str, Any]:
    r = svrctl("task", "stats", *args, "--json")
    assert r.exit_code == 0, r.output
    data: dict[str, Any] = json.loads(r.output)
    return data


def test_default_window_counts_every_status(svrctl: Invoke, history: datetime) -> None:
    data = _stats(svrctl, "backup")
    assert data["task"] == "backup"
    assert data["days"] == 7
    since = datetime.fromisoformat(data["since"])
    assert abs(since - (history - timedelta(days=7))) < timedelta(minutes=1)
    assert data["by_status"] == {
        "failed": 1,
        "missed": 1,
        "running": 1,
        "skipped": 1,
        "success": 10,
        "timed_out": 1,
    }
    assert (data["runs"], data["successes"], data["failures"]) == (15, 10, 2)
    assert data["success_rate"] == round(10 / 12, 4)
    # ended steps: 100..1000, 2000, 300000 -> nearest rank 6 of 12 and 12 of 12
    assert (data["duration_median_ms"], data["duration_p95_ms"]) == (600, 300_000)
    assert datetime.fromisoformat(data["last_success_at"]) == history - timedelta(hours=2)
    assert datetime.fromisoformat(data["last_failure_at"]) == history - timedelta(hours=20)
    assert data["last_failure_status"] == "timed_out"
    assert data["all_time"] == {"run_count": 40, "success_count": 30, "failure_count": 9}


def test_a_wider_window_takes_older_rows(svrctl: Invoke, history: datetime) -> None:
    data = _stats(svrctl, "backup", "--days", "10")
    assert data["by_status"]["success"] == 11
    assert data["by_status"]["crashed"] == 1
    assert (data["runs"], data["successes"], data["failures"]) == (17, 11, 3)
    # 1, 5, 100..1000, 2000, 300000: rank 7 of 14 is 500
    assert (data["duration_median_ms"], data["duration_p95_ms"]) == (500, 300_000)
    assert data["last_failure_status"] == "timed_out"


def test_no_runs_in_the_window(svrctl: Invoke, now: datetime) -> None:
    data = _stats(svrctl, "backup", "--days", "1")
    assert (data["runs"], data["by_status"], data["success_rate"]) == (0, {}, None)
    assert (data["duration_median_ms"], data["duration_p95_ms"]) == (None, None)
    assert (data["last_success_at"], data["last_failure_at"]) == (None, None)
    r = svrctl("task", "stats", "backup", "--days", "1")
    assert r.exit_code == 0, r.output
    assert "runs:          0\n" in r.output
    assert "success rate:  -" in r.output


def test_text_output(svrctl: Invoke, history: datetime) -> None:
    r = svrctl("task", "stats", "backup")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("task backup, last 7 days (since ")
    assert lines[1] == (
        "  runs:          15 (failed 1, missed 1, running 1, skipped 1, success 10, timed_out 1)"
    )
    assert lines[2] == "  success rate:  83.3 %"
    assert lines[3] == "  duration:      median 600 ms, p95 5 min 0 s"
    last_failure = (history - timedelta(hours=20)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert lines[5] == f"  last failure:  {last_failure} (timed_out)"
    assert lines[6] == "  all time:      40 runs, 30 succeeded, 9 failed"


def test_bad_input(svrctl: Invoke, now: datetime) -> None:
    r = svrctl("task", "stats", "nope")
    assert r.exit_code != 0
    assert "no task named 'nope'" in r.output
    r = svrctl("task", "stats", "backup", "--days", "0")
    assert r.exit_code == 2
    assert "--days" in r.output
