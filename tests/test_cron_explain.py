"""``svrctl cron explain``: fire times and the Prefect schedule an expression becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from svrctl.cron import next_fire_times, parse_cron


@pytest.fixture
def explain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Run ``svrctl cron explain ARGS...`` (no app database needed)."""
    from svrctl.cli import cli

    monkeypatch.setenv("SVRCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SVRCTL_TIMEZONE", "Europe/Berlin")

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["cron", "explain", *args], catch_exceptions=False)

    return run


def _json(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_fire_times_and_prefect_cron_schedule(explain: Any) -> None:
    r = explain("0 30 9 * * MON-FRI", "--tz", "America/New_York", "-n", "4")
    assert r.exit_code == 0, r.output
    assert "seconds-first format" in r.stdout
    assert "at 09:30 on Monday, Tuesday, Wednesday, Thursday and Friday" in r.stdout
    assert "next 4 fire times (America/New_York):" in r.stdout
    assert r.stdout.count(" 09:30:00 E") == 4  # EST or EDT
    assert "Prefect schedule: cron '30 9 * * 1-5' in America/New_York, day_or off" in r.stdout


def test_json_matches_the_cron_module_and_uses_the_default_zone(explain: Any) -> None:
    before = datetime.now(UTC)
    r = explain("*/15 * * * *", "-n", "6", "--json")
    assert r.exit_code == 0, r.output
    data = _json(r)
    assert (data["format"], data["timezone"], data["error"]) == ("standard", "Europe/Berlin", None)
    assert data["prefect_schedule"] == {
        "type": "cron",
        "cron": "*/15 * * * *",
        "day_or": False,
        "rrule": None,
        "timezone": "Europe/Berlin",
    }
    times = [datetime.fromisoformat(t) for t in data["next_fire_times"]]
    expected = next_fire_times(parse_cron("*/15 * * * *"), before, 7, "Europe/Berlin")
    assert times in (expected[:6], expected[1:7])  # a quarter may pass between the two reads


def test_vixie_or_rule_shows_day_or_on(explain: Any) -> None:
    data = _json(explain("0 0 13 * 5", "--tz", "UTC", "--json"))
    assert data["prefect_schedule"]["day_or"] is True
    assert "on (either day field)" in explain("0 0 13 * 5", "--tz", "UTC").stdout


def test_year_field_becomes_an_rrule_in_utc(explain: Any) -> None:
    r = explain("0 0 12 1 * * 2030-2031", "--tz", "UTC", "-n", "3", "--json")
    assert r.exit_code == 0, r.output
    data = _json(r)
    assert data["next_fire_times"][0] == "2030-01-01T12:00:00+00:00"
    assert data["prefect_schedule"]["type"] == "rrule"
    assert data["prefect_schedule"]["rrule"].startswith("DTSTART:20300101T000000\nRRULE:")
    human = explain("0 0 12 1 * * 2030-2031", "--tz", "UTC").stdout
    assert "Prefect schedule: rrule in UTC:" in human
    assert "  RRULE:FREQ=YEARLY" in human


def test_a_clock_free_schedule_becomes_the_same_schedule_in_utc(explain: Any) -> None:
    data = _json(explain("0 */5 * * * *", "--json"))
    assert data["prefect_schedule"]["cron"] == "*/5 * * * *"
    assert data["prefect_schedule"]["timezone"] == "UTC"


def test_unrepresentable_schedule_exits_2_with_the_reason_and_the_times(explain: Any) -> None:
    r = explain("0 30 2 * * *", "-n", "2")
    assert r.exit_code == 2
    assert "next 2 fire times (Europe/Berlin):" in r.stdout
    assert "Prefect schedule: none" in r.stdout
    assert "error: invalid schedule: schedule '0 30 2 * * *' cannot run in Europe/Berlin" in (
        r.stderr
    )
    assert "'30 2 * * *'" in r.stderr  # what to write instead
    data = _json(explain("0 30 2 * * *", "--json"))
    assert data["prefect_schedule"] is None
    assert "02:30 does not exist" in data["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0 61 * * * *"], "invalid schedule: invalid cron expression '0 61 * * * *': field 2"),
        (["@sometimes"], "invalid schedule"),
        (["@daily", "--tz", "Mars/Base"], "invalid timezone (--tz): unknown time zone"),
    ],
)
def test_bad_input_exits_2(explain: Any, args: list[str], message: str) -> None:
    r = explain(*args)
    assert (r.exit_code, r.stdout) == (2, "")
    assert message in r.stderr


def test_no_more_fire_times(explain: Any) -> None:
    r = explain("0 0 0 1 1 * 2020", "--tz", "UTC")
    assert r.exit_code == 0, r.output
    assert "next fire times: none" in r.stdout
