"""``svrctl task ...`` on SQLite and PostgreSQL, including every bad input."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import Invoke

from svrctl.db.engine import Database
from svrctl.db.models import TaskHistory
from svrctl.tasks import get_task


@pytest.fixture
def servers(svrctl: Invoke) -> Invoke:
    assert svrctl("server", "add", "web-1", "--host", "h1", "--tag", "web").exit_code == 0
    assert svrctl("server", "add", "web-2", "--host", "h2", "--tag", "web").exit_code == 0
    return svrctl


def _tasks(svrctl: Invoke) -> list[dict[str, object]]:
    result: list[dict[str, object]] = json.loads(svrctl("task", "list", "--json").output)
    return result


def _show(svrctl: Invoke, name: str) -> dict[str, object]:
    r = svrctl("task", "show", name, "--json")
    assert r.exit_code == 0, r.output
    result: dict[str, object] = json.loads(r.output)
    return result


def test_add_ssh_task_with_every_option(servers: Invoke) -> None:
    r = servers(
        "task", "add", "backup", "--server", "web-1", "--command", "tar czf /tmp/b.tgz",
        "--args", '["/etc", "a b"]', "--description", "nightly", "--schedule", "0 30 4 * * *",
        "--timezone", "Europe/Berlin", "--timeout", "600", "--retries", "2",
        "--retry-delay", "15", "--overlap", "queue", "--misfire-grace", "120",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "✓ added task backup: command on web-1, schedule '0 30 4 * * *' (Europe/Berlin)" in (
        r.output
    )
    assert "next run: " in r.output
    data = _show(servers, "backup")
    expected = {
        "name": "backup",
        "kind": "ssh",
        "server": "web-1",
        "tag": None,
        "command": "tar czf /tmp/b.tgz",
        "args": ["/etc", "a b"],
        "description": "nightly",
        "schedule": "0 30 4 * * *",
        "timezone": "Europe/Berlin",
        "timeout_seconds": 600,
        "retries": 2,
        "retry_delay_seconds": 15,
        "overlap_policy": "queue",
        "misfire_grace_seconds": 120,
        "enabled": True,
        "run_count": 0,
        "last_status": None,
    }
    assert {k: data[k] for k in expected} == expected
    # next_run_at is set, and is the first fire time: 04:30 Berlin time
    next_run = datetime.fromisoformat(str(data["next_run_at"]))
    local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.second) == (4, 30, 0)
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)


def test_defaults(servers: Invoke) -> None:
    assert servers("task", "add", "t", "--server", "web-1", "--command", "uptime").exit_code == 0
    data = _show(servers, "t")
    assert (data["timeout_seconds"], data["retries"], data["overlap_policy"]) == (300, 0, "skip")
    assert (data["schedule"], data["timezone"], data["next_run_at"]) == ("", "UTC", None)


def test_add_tag_local_and_plugin_tasks(servers: Invoke) -> None:
    assert servers("task", "add", "a", "--tag", "web", "--command", "uptime").exit_code == 0
    assert servers("task", "add", "b", "--local", "--command", "df -h").exit_code == 0
    r = servers(
        "task", "add", "c", "--plugin", "echo", "--server", "web-2", "--config", '{"message": "x"}'
    )
    assert r.exit_code == 0, r.output
    assert servers("task", "add", "d", "--plugin", "echo").exit_code == 0
    rows = {t["name"]: t for t in _tasks(servers)}
    assert (rows["a"]["kind"], rows["a"]["tag"], rows["a"]["server"]) == ("ssh", "web", None)
    assert (rows["b"]["kind"], rows["b"]["server"]) == ("local", None)
    assert (rows["c"]["kind"], rows["c"]["plugin"], rows["c"]["server"]) == (
        "plugin",
        "echo",
        "web-2",
    )
    assert rows["c"]["plugin_config"] == {"message": "x"}
    assert (rows["d"]["kind"], rows["d"]["server"]) == ("plugin", None)
    listing = servers("task", "list").output
    assert "tag:web" in listing
    assert "local" in listing


def test_show_prints_the_next_five_fire_times_in_the_task_zone(servers: Invoke) -> None:
    servers(
        "task", "add", "noon", "--server", "web-1", "--command", "true",
        "--schedule", "0 0 12 * * MON", "--timezone", "America/New_York",
    )  # fmt: skip
    data = _show(servers, "noon")
    times = [datetime.fromisoformat(str(t)) for t in data["next_fire_times"]]  # type: ignore[attr-defined]
    assert len(times) == 5
    zone = ZoneInfo("America/New_York")
    for t in times:
        local = t.astimezone(zone)
        assert (local.weekday(), local.hour, local.minute, local.second) == (0, 12, 0, 0)
        assert t.utcoffset() == local.utcoffset()  # printed in the task's zone
    assert all(
        b.astimezone(zone) - a.astimezone(zone) == timedelta(days=7)
        for a, b in itertools.pairwise(times)
    )
    assert times[0] > datetime.now(UTC)
    human = servers("task", "show", "noon").output
    assert "next runs (America/New_York):" in human
    assert human.count(" 12:00:00 E") == 5  # EST or EDT


def test_five_field_cron_and_macros(servers: Invoke) -> None:
    for name, cron in [("a", "*/15 * * * *"), ("b", "@hourly"), ("c", "@daily")]:
        r = servers("task", "add", name, "--local", "--command", "true", "--schedule", cron)
        assert r.exit_code == 0, r.output
    times = [datetime.fromisoformat(str(t)) for t in _show(servers, "a")["next_fire_times"]]  # type: ignore[attr-defined]
    assert all(t.minute % 15 == 0 and t.second == 0 for t in times)
    hourly = [datetime.fromisoformat(str(t)) for t in _show(servers, "b")["next_fire_times"]]  # type: ignore[attr-defined]
    assert all((t.minute, t.second) == (0, 0) for t in hourly)


def test_edit(servers: Invoke) -> None:
    servers("task", "add", "t", "--server", "web-1", "--command", "uptime")
    r = servers("task", "edit", "t", "--schedule", "0 0 * * * *", "--timeout", "30")
    assert r.exit_code == 0, r.output
    data = _show(servers, "t")
    assert (data["schedule"], data["timeout_seconds"], data["command"]) == (
        "0 0 * * * *",
        30,
        "uptime",
    )
    assert data["next_run_at"] is not None
    # move it to a tag, then to the local host, then clear the schedule
    assert servers("task", "edit", "t", "--tag", "web").exit_code == 0
    assert (_show(servers, "t")["server"], _show(servers, "t")["tag"]) == (None, "web")
    assert servers("task", "edit", "t", "--local").exit_code == 0
    assert _show(servers, "t")["kind"] == "local"
    assert servers("task", "edit", "t", "--schedule", "").exit_code == 0
    assert _show(servers, "t")["next_run_at"] is None


def test_enable_disable(servers: Invoke) -> None:
    servers("task", "add", "t", "--local", "--command", "true", "--schedule", "@hourly")
    r = servers("task", "disable", "t")
    assert (r.exit_code, r.output.strip()) == (0, "✓ disabled task t")
    data = _show(servers, "t")
    assert (data["enabled"], data["next_run_at"], data["next_fire_times"]) == (False, None, [])
    assert "the task is disabled" in servers("task", "show", "t").output
    assert servers("task", "enable", "t").exit_code == 0
    data = _show(servers, "t")
    assert data["enabled"] is True
    assert data["next_run_at"] is not None
    assert servers("task", "add", "u", "--local", "--command", "x", "--disabled").exit_code == 0
    assert _show(servers, "u")["enabled"] is False


def test_rm_removes_the_task_and_its_history(servers: Invoke, database: Database) -> None:
    servers("task", "add", "t", "--local", "--command", "true")
    with database.write() as s:
        s.add(TaskHistory(task_id=get_task(s, "t").id, status="success"))
    r = servers("task", "rm", "t")
    assert (r.exit_code, r.output.strip()) == (0, "✓ removed task t")
    assert _tasks(servers) == []
    with database.read() as s:
        from sqlalchemy import func, select

        assert s.scalar(select(func.count()).select_from(TaskHistory)) == 0


def test_history(servers: Invoke, database: Database) -> None:
    servers("task", "add", "t", "--server", "web-1", "--command", "true")
    base = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    with database.write() as s:
        task_id = get_task(s, "t").id
        for i in range(30):
            failed = i % 3 == 0
            s.add(
                TaskHistory(
                    task_id=task_id,
                    server_name="web-1",
                    status="failed" if failed else "success",
                    success=not failed,
                    exit_code=1 if failed else 0,
                    output=f"\nline one of run {i}\nline two",
                    error=f"boom {i}" if failed else None,
                    duration_ms=100 + i,
                    triggered_by="schedule",
                    started_at=base + timedelta(minutes=i),
                    finished_at=base + timedelta(minutes=i, seconds=1),
                )
            )
    r = servers("task", "history", "t")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == [
        "ID", "STATUS", "STARTED", "DURATION", "EXIT", "TRY", "BY", "SERVER", "SUMMARY",
    ]  # fmt: skip
    assert len(lines) == 1 + 20  # default limit
    assert "2026-11-01 08:29:00 UTC" in lines[1]
    assert "line one of run 29" in lines[1]  # newest first, first non-empty line of output
    assert "boom 27" in lines[3]  # the error wins over the output
    assert "129 ms" in lines[1]
    rows = json.loads(servers("task", "history", "t", "--limit", "5", "--json").output)
    assert [row["status"] for row in rows] == ["success", "success", "failed", "success", "success"]
    assert rows[2]["error"] == "boom 27"
    assert rows[0]["started_at"] == "2026-11-01T08:29:00+00:00"


def test_history_of_a_task_without_runs(servers: Invoke) -> None:
    servers("task", "add", "t", "--local", "--command", "true")
    assert servers("task", "history", "t").output.strip() == "(none)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "nope", "--command", "x"], "no server named 'nope'"),
        (["--tag", "nope", "--command", "x"], "no server has the tag 'nope'"),
        (["--server", "web-1"], "an ssh task needs a command"),
        (["--command", "x"], "a task needs a target"),
        (["--server", "web-1", "--tag", "web", "--command", "x"], "not both"),
        (["--local", "--server", "web-1", "--command", "x"], "--local task runs on the worker"),
        (["--local", "--plugin", "echo"], "either --local or --plugin"),
        (["--plugin", "echo", "--tag", "web"], "not --tag"),
        (["--local"], "a local task needs a command"),
        (["--local", "--command", "x", "--args", "[1,"], "--args is not valid JSON"),
        (["--local", "--command", "x", "--args", "nope"], "--args is not valid JSON"),
        (["--local", "--command", "x", "--args", '"str"'], "args must be a JSON list"),
        (["--local", "--command", "x", "--args", "[[1]]"], "args[0] must be a string"),
        (["--local", "--command", "x", "--args", '{"-x": 1}'], "bare option name"),
        (["--local", "--command", "x", "--args", '{"k": {"a": 1}}'], "args['k'] must be"),
        (["--plugin", "echo", "--config", "[1]"], "--config must be a JSON object"),
        (["--plugin", "echo", "--config", "{"], "--config is not valid JSON"),
        (["--plugin", "nope"], "no plugin named 'nope'"),
        (["--plugin", "echo", "--config", '{"message": 5}'], "message: Input should be"),
        (["--plugin", "echo", "--config", '{"bogus": 1}'], "bogus: Extra inputs"),
        (["--local", "--command", "x", "--min-success", "1"], "min_success applies"),
        (["--tag", "web", "--command", "x", "--min-success", "0"], "invalid min_success"),
        (["--local", "--command", "x", "--timeout", "-5"], "invalid timeout_seconds"),
        (["--local", "--command", "x", "--timeout", "0"], "invalid timeout_seconds"),
        (["--local", "--command", "x", "--retries", "-1"], "invalid retries"),
        (["--local", "--command", "x", "--retry-delay", "-1"], "invalid retry_delay_seconds"),
        (["--local", "--command", "x", "--misfire-grace", "-1"], "invalid misfire_grace_seconds"),
        (["--local", "--command", "x", "--timezone", "Mars/Base"], "unknown time zone"),
        (["--local", "--command", "x", "--schedule", "0 0 25 * * *"], "hour"),
        (["--local", "--command", "x", "--schedule", "61 * * * * *"], "second"),
        (["--local", "--command", "x", "--schedule", "* * *"], "invalid schedule"),
        (["--local", "--command", "x", "--schedule", "0 0 0 * * FOO"], "day"),
        (["--local", "--command", "x", "--schedule", "@sometimes"], "invalid schedule"),
        (
            [
                "--local",
                "--command",
                "x",
                "--schedule",
                "0 30 2 * * *",
                "--timezone",
                "Europe/Berlin",
            ],
            "cannot run in Europe/Berlin under Prefect exactly",
        ),
        (["--local", "--command", ""], "a local task needs a command"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    servers: Invoke, args: list[str], message: str
) -> None:
    r = servers("task", "add", "t", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert _tasks(servers) == []


def test_invalid_cron_names_the_field(servers: Invoke) -> None:
    r = servers("task", "add", "t", "--local", "--command", "x", "--schedule", "0 0 25 * * *")
    assert "field 3 (hour)" in r.output


def test_duplicate_task_name(servers: Invoke) -> None:
    servers("task", "add", "t", "--local", "--command", "one")
    r = servers("task", "add", "t", "--local", "--command", "two")
    assert r.exit_code == 2
    assert "a task named 't' already exists" in r.output
    assert _show(servers, "t")["command"] == "one"


@pytest.mark.parametrize("verb", ["show", "rm", "enable", "disable", "history"])
def test_unknown_task(servers: Invoke, verb: str) -> None:
    r = servers("task", verb, "nope")
    assert r.exit_code == 2
    assert "no task named 'nope'" in r.output


def test_bad_edit_changes_nothing(servers: Invoke) -> None:
    servers("task", "add", "t", "--server", "web-1", "--command", "uptime")
    before = _show(servers, "t")
    for args in (["--timeout", "-1"], ["--server", "nope"], ["--schedule", "bad"]):
        r = servers("task", "edit", "t", *args)
        assert r.exit_code == 2, r.output
    assert _show(servers, "t") == before
