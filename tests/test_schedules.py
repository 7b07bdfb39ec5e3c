"""Tests for svrctl.schedules: svrctl schedules as Prefect schedules, at exactly the same instants.

Every comparison runs Prefect's own server-side schedule objects the way its scheduler
service does: the client schedule goes through the API schema (DeploymentScheduleCreate)
and the database column's JSON round trip, and the dates come from
``_get_dates_generator``, the method ``_generate_scheduled_flow_runs`` calls.

For every (expression, zone) pair, the translation either succeeds and then the next 50
fire times agree from every start (ordinary days and the moments around each daylight
saving change of 2026 and 2027), or it is refused and the test shows an instant at which
the Prefect schedule the translation would otherwise have produced differs from svrctl.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from svrctl.cron import CronError, next_fire_times, parse_cron
from svrctl.exceptions import BadInputError
from svrctl.schedules import (
    PrefectScheduleSpec,
    ScheduleNotRepresentable,
    _horizon,
    _scan_transitions,
    _transitions,
    check_representable,
    to_prefect_schedule,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
N = 50

# --- Prefect, the way its scheduler service computes run times ------------------------


def server_schedule(spec: PrefectScheduleSpec) -> Any:
    """Send the client schedule through the API schema and the database column, as Prefect does."""
    from prefect.server.schemas import actions
    from prefect.server.schemas import schedules as server_schedules

    client = spec.to_prefect()
    create = actions.DeploymentScheduleCreate.model_validate(
        {"schedule": client.model_dump(mode="json")}
    )
    column = TypeAdapter(server_schedules.SCHEDULE_TYPES)  # what the ORM column stores
    return column.validate_python(column.dump_python(create.schedule, mode="json"))


def prefect_fires(spec: PrefectScheduleSpec, after: datetime, n: int = N) -> list[datetime]:
    """The first ``n`` run times strictly after ``after``, as UTC instants."""
    schedule = server_schedule(spec)
    dates = schedule._get_dates_generator(n=n, start=after + timedelta(microseconds=1))
    return sorted(datetime.fromtimestamp(d.timestamp(), UTC) for d in dates)


def svrctl_fires(expr: str, tz: str, after: datetime, n: int = N) -> list[datetime]:
    return [t.astimezone(UTC) for t in next_fire_times(parse_cron(expr), after, n, tz)]


def first_mismatch(ours: list[datetime], theirs: list[datetime]) -> tuple[datetime, str] | None:
    """The earliest instant that is in one list only, and which side has it."""
    for a, b in zip(ours, theirs, strict=False):
        if a != b:
            return (a, "svrctl only") if a < b else (b, "Prefect only")
    if len(ours) != len(theirs):
        longer = ours if len(ours) > len(theirs) else theirs
        side = "svrctl only" if longer is ours else "Prefect only"
        return longer[min(len(ours), len(theirs))], side
    return None


def test_the_scheduler_service_uses_get_dates_generator() -> None:
    """Guard: if Prefect changes how its scheduler computes run times, these tests must too."""
    from prefect.server.models import deployments
    from prefect.server.services import scheduler

    assert ".schedule._get_dates_generator(" in inspect.getsource(
        deployments._generate_scheduled_flow_runs
    )
    assert "_generate_scheduled_flow_runs" in inspect.getsource(scheduler._collect_flow_runs)


# --- fixtures ------------------------------------------------------------------------------


@contextlib.contextmanager
def slim_zone_files() -> Iterator[None]:
    """Make dateutil read the zone files of the tzdata package, which are compiled "slim"."""
    import dateutil.tz
    import dateutil.tz.tz
    import tzdata

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dateutil.tz.tz, "TZPATHS", [str(Path(tzdata.__file__).parent / "zoneinfo")])
        dateutil.tz.gettz.cache_clear()
        try:
            yield
        finally:
            dateutil.tz.gettz.cache_clear()


# --- daylight saving changes of the test zones ----------------------------------------


def zone_transitions(tz: str, start: datetime, end: datetime) -> Iterator[tuple[datetime, int]]:
    """(UTC instant, jump in seconds) of each offset change, found by an hourly scan."""
    zone = ZoneInfo(tz)

    def offset(t: datetime) -> timedelta:
        o = t.astimezone(zone).utcoffset()
        assert o is not None
        return o

    t = start
    while t < end:
        if offset(t) != offset(t + timedelta(hours=1)):
            lo, hi = t, t + timedelta(hours=1)
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            yield hi, int((offset(hi) - offset(lo)).total_seconds())
        t += timedelta(hours=1)


TRANSITIONS = {
    tz: list(
        zone_transitions(tz, datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))
    )
    for tz in ZONES
}


def test_the_test_zones_change_their_clocks_as_expected() -> None:
    jumps = {tz: [j for _, j in TRANSITIONS[tz]] for tz in ZONES}
    assert jumps["UTC"] == [] and jumps["Asia/Kolkata"] == []
    assert jumps["Europe/Berlin"] == [3600, -3600, 3600, -3600]
    assert jumps["America/New_York"] == [3600, -3600, 3600, -3600]
    assert jumps["Australia/Lord_Howe"] == [-1800, 1800, -1800, 1800]


@pytest.mark.parametrize(
    "tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Africa/Casablanca"]
)
def test_cached_transitions_equal_a_fresh_scan(tz: str) -> None:
    # _transitions answers from a per-zone cache of whole years; every window must
    # list exactly what the day-by-day scan of that window alone finds.
    zone = ZoneInfo(tz)
    now = datetime(2026, 5, 17, 13, 7, 11, tzinfo=UTC)
    start, end = now - timedelta(days=2), _horizon(now)
    assert list(_transitions(zone, start, end)) == list(
        _scan_transitions(zone, int(start.timestamp()), int(end.timestamp()))
    )
    y2026, y2028 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    found = [
        (tr.at.replace(tzinfo=UTC), int(tr.jump.total_seconds()))
        for tr in _transitions(zone, y2026, y2028)
    ]
    assert found == list(zone_transitions(tz, y2026, y2028))  # an independent hourly scan
    assert found
    second, day = timedelta(seconds=1), timedelta(days=1)
    windows = [(datetime(2025, 6, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))]
    for at, _ in found:  # a change counts when its first second is in (start, end]
        windows += [(at - second, at + day), (at, at + day)]
        windows += [(at - day, at), (at - day, at - second)]
    for lo, hi in windows:
        scanned = list(_scan_transitions(zone, int(lo.timestamp()), int(hi.timestamp())))
        assert list(_transitions(zone, lo, hi)) == scanned, (lo, hi)


def starts_around(at: datetime, jump: int) -> list[datetime]:
    """Moments just before, at and inside a change, where Prefect's start handling kicks in."""
    span = timedelta(seconds=abs(jump))
    return [
        at - timedelta(hours=3),
        at - span - timedelta(seconds=1),  # just before a gap or a fold's first pass
        at - timedelta(seconds=1),  # just before a fold's second pass
        at + span / 2,  # inside a fold's second pass, or just after a gap
    ]


def starts(tz: str) -> list[datetime]:
    result = [
        NOW,
        datetime(2026, 6, 15, 12, 34, 56, 789000, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=ZoneInfo(tz)),
    ]
    for at, jump in TRANSITIONS[tz]:
        result += starts_around(at, jump)
    return result


# --- the matrix --------------------------------------------------------------------------

SECONDS_FIRST = [
    # the examples of the issue
    "0 */5 * * * *",
    "0 0 * * * *",
    "0 0 0 * * *",
    "0 0 12 * * MON",
    "0 30 9,17 * * *",
    # ranges, steps, lists, names, Sunday = 1, seconds other than 0
    "*/10 * * * * *",
    "30 15 8 1-7 * 2",
    "0 0 9-17/2 * * MON-FRI",
    "5/20 10-20/5 6 ? JAN-MAR,OCT SUN,SAT",
    "0 0 0 13 * FRI",
    "0 0 0 29 2 *",
    "0 0 12 * * 1",
    "0 0 12 * * 7",
    "0 15 2 * * SUNDAY",
    "45 59 23 31 * *",
    "0 0 0 1 1 * *",
    # close to the daylight saving changes
    "0 30 2 * * *",
    "0 30 1 * * *",
    "0 0 2,3 * * *",
    "0 0,30 1 * * *",
    "0 */30 2-23 * * *",
    "0 0 3 * * *",
    # with a year field
    "0 0 0 1 1 * 2030,2032",
    "0 0 12 * * MON 2026-2027",
    "0 30 9 * * * 2027,2029,2030",
    "0 0 0 29 2 * 2028",
    "15 45 23 31 DEC * 2026-2040/7",
    "0 0 0 1 1 * 2099-2100",
    "0 0 0 1 1 * 2025",
]
STANDARD = [
    "0 0 * * 0",
    "0 0 * * 7",
    "0 12 * * sun",
    "*/15 * * * *",
    "30 2 * * *",
    "0 0 13 * 5",
    "0 0 1-31 * 1",
    "0 9 * * mon-fri",
    "10/20 0 1,15 jan-mar *",
    "0 0 * * 5-7",
    "0 0 * * 1-7/2",
    "15,45 1-3 * * *",
    "0 22-23,0-3 * * 6,0",
]
MACROS = ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"]

# What the translation decides, for review: every (expression, zone) pair not listed is accepted.
EXPECTED_REFUSALS = {
    ("0 */5 * * * *", "Australia/Lord_Howe"),
    ("0 0 * * * *", "Australia/Lord_Howe"),
    ("*/10 * * * * *", "Australia/Lord_Howe"),
    ("0 15 2 * * SUNDAY", "Europe/Berlin"),
    ("0 15 2 * * SUNDAY", "America/New_York"),
    ("0 15 2 * * SUNDAY", "Australia/Lord_Howe"),
    ("0 30 2 * * *", "Europe/Berlin"),
    ("0 30 2 * * *", "America/New_York"),
    ("0 30 1 * * *", "America/New_York"),
    ("0 30 1 * * *", "Australia/Lord_Howe"),
    ("0 0 2,3 * * *", "Europe/Berlin"),
    ("0 0 2,3 * * *", "Australia/Lord_Howe"),
    ("0 0,30 1 * * *", "America/New_York"),
    ("0 0,30 1 * * *", "Australia/Lord_Howe"),
    ("0 */30 2-23 * * *", "Europe/Berlin"),
} | {
    (expr, tz)
    for expr in SECONDS_FIRST
    if parse_cron(expr).years is not None and expr != "0 0 0 1 1 * 2025"
    for tz in ZONES
    if tz != "UTC"
}

MATRIX = [(e, tz) for e in SECONDS_FIRST + STANDARD + MACROS for tz in ZONES]


@pytest.mark.parametrize(("expr", "tz"), MATRIX)
def test_same_instants_or_refused_with_a_difference(expr: str, tz: str) -> None:
    try:
        spec = to_prefect_schedule(expr, tz, now=NOW)
    except ScheduleNotRepresentable as exc:
        assert (expr, tz) in EXPECTED_REFUSALS
        instant, side = demonstrate_difference(expr, tz, str(exc))
        assert instant >= NOW and side in ("svrctl only", "Prefect only")
        return
    assert (expr, tz) not in EXPECTED_REFUSALS
    if spec.timezone != tz:
        # Only a schedule that names no hour, day or month is rewritten, and for UTC.
        parsed = parse_cron(expr)
        assert spec.timezone == "UTC"
        assert parsed.dialect == "seconds-first"
        assert len(parsed.hours) == 24 and len(parsed.days_of_month) == 31
    for start in starts(tz):
        assert prefect_fires(spec, start) == svrctl_fires(expr, tz, start), (expr, tz, start)


def candidate(expr: str, tz: str) -> PrefectScheduleSpec:
    """The Prefect schedule the translation would produce without its exactness checks.

    The rendering does not depend on the zone, and the UTC zone is never refused for
    daylight saving time, so it is the UTC translation with the zone swapped in.
    """
    utc = to_prefect_schedule(expr, "UTC", now=NOW)
    return PrefectScheduleSpec(
        utc.kind, utc.cron, utc.day_or, utc.interval_seconds, utc.anchor, utc.rrule, tz
    )


def demonstrate_difference(expr: str, tz: str, message: str) -> tuple[datetime, str]:
    """Find an instant at which the refused expression's Prefect candidate differs."""
    spec = candidate(expr, tz)
    if spec.kind == "rrule":
        # dateutil reads "slim" zone files (as shipped by the tzdata package) as offset 0.
        assert "has a year field" in message
        with slim_zone_files():
            found = first_mismatch(svrctl_fires(expr, tz, NOW), prefect_fires(spec, NOW))
        assert found is not None
        return found
    day = re.search(r"on (\d{4}-\d{2}-\d{2}) the clocks", message)
    assert day is not None, message
    named = [
        (at, jump)
        for at, jump in TRANSITIONS[tz]
        if (at - timedelta(seconds=max(jump, 0))).astimezone(ZoneInfo(tz)).date().isoformat()
        == day.group(1)
    ]
    assert len(named) == 1, (message, TRANSITIONS[tz])
    for start in starts_around(*named[0]):
        found = first_mismatch(svrctl_fires(expr, tz, start), prefect_fires(spec, start))
        if found is not None:
            return found
    raise AssertionError(f"refused, but no difference around {day.group(1)}: {message}")


def test_every_expected_refusal_is_in_the_matrix() -> None:
    assert set(MATRIX) >= EXPECTED_REFUSALS


# --- refusals and acceptances near the changes, spelled out ------------------------------


def test_skipped_time_berlin() -> None:
    """02:30 does not exist on 29 March 2026 in Berlin: svrctl skips it, Prefect runs at 03:30."""
    with pytest.raises(ScheduleNotRepresentable) as caught:
        to_prefect_schedule("0 30 2 * * *", "Europe/Berlin", now=NOW)
    assert str(caught.value) == (
        "schedule '0 30 2 * * *' cannot run in Europe/Berlin under Prefect exactly as "
        "svrctl runs it: on 2026-03-29 the clocks jump from 02:00 to 03:00, so 02:30 does "
        "not exist; the seconds-first format skips it, a Prefect cron schedule would run "
        "at 03:30 instead. To fix it, use the UTC time zone (or another without daylight "
        "saving time), or keep every run out of 02:00-03:00, or write it as the 5-field "
        "expression '30 2 * * *', which runs a skipped time late and a repeated time once"
    )
    after = datetime(2026, 3, 28, 12, tzinfo=UTC)
    ours = svrctl_fires("0 30 2 * * *", "Europe/Berlin", after, 2)
    theirs = prefect_fires(candidate("0 30 2 * * *", "Europe/Berlin"), after, 2)
    assert ours == [
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]
    assert theirs == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]


def test_repeated_time_new_york() -> None:
    """01:30 happens twice on 1 November 2026 in New York: svrctl runs twice, Prefect once."""
    with pytest.raises(ScheduleNotRepresentable, match="happens twice") as caught:
        to_prefect_schedule("0 30 1 * * *", "America/New_York", now=NOW)
    assert "on 2026-11-01 the clocks go back from 02:00 to 01:00, so 01:30" in str(caught.value)
    after = datetime(2026, 11, 1, tzinfo=UTC)
    ours = svrctl_fires("0 30 1 * * *", "America/New_York", after, 3)
    theirs = prefect_fires(candidate("0 30 1 * * *", "America/New_York"), after, 3)
    second_pass = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert second_pass in ours and second_pass not in theirs


def test_half_hour_change_lord_howe() -> None:
    """Lord Howe moves its clocks by 30 minutes: on the hour, 02:00 is skipped."""
    with pytest.raises(ScheduleNotRepresentable) as caught:
        to_prefect_schedule(
            "0 0 * * * *", "Australia/Lord_Howe", now=datetime(2026, 6, 1, tzinfo=UTC)
        )
    message = str(caught.value)
    assert "on 2026-10-04 the clocks jump from 02:00 to 02:30, so 02:00 does not exist" in message
    assert "run at 02:30 instead" in message
    after = datetime(2026, 10, 3, 14, tzinfo=UTC)
    ours = svrctl_fires("0 0 * * * *", "Australia/Lord_Howe", after, 3)
    theirs = prefect_fires(candidate("0 0 * * * *", "Australia/Lord_Howe"), after, 3)
    assert datetime(2026, 10, 3, 15, 30, tzinfo=UTC) in set(theirs) - set(ours)  # 02:30 +11


def test_skipped_time_whose_shift_is_a_run_time_is_accepted() -> None:
    """New York, 02:00 and 03:00: Prefect moves the missing 02:00 to 03:00 and runs it once."""
    spec = to_prefect_schedule("0 0 2,3 * * *", "America/New_York", now=NOW)
    after = datetime(2026, 3, 7, 12, tzinfo=UTC)
    expected = [
        datetime(2026, 3, 8, 7, tzinfo=UTC),  # 8 March 03:00 EDT, once; 02:00 did not exist
        datetime(2026, 3, 9, 6, tzinfo=UTC),  # 9 March 02:00 EDT
        datetime(2026, 3, 9, 7, tzinfo=UTC),  # 9 March 03:00 EDT
    ]
    assert svrctl_fires("0 0 2,3 * * *", "America/New_York", after, 3) == expected
    assert prefect_fires(spec, after, 3) == expected


def test_changes_before_now_do_not_matter() -> None:
    """A schedule that clashes only with a change already past is exact from now on."""
    # 29 March 2026 is the only last Sunday of March on the 29th until 2037.
    expr = "0 30 2 29 3 *"
    with pytest.raises(ScheduleNotRepresentable, match="2026-03-29"):
        to_prefect_schedule(expr, "Europe/Berlin", now=NOW)
    with pytest.raises(ScheduleNotRepresentable, match="2037-03-29"):
        to_prefect_schedule(expr, "Europe/Berlin", now=datetime(2026, 4, 1, tzinfo=UTC))
    # With a year field that ends before 2037 it is fine from April 2026 on (UTC only: year field).
    late = datetime(2026, 4, 1, tzinfo=UTC)
    spec = to_prefect_schedule("0 30 2 29 3 * 2026-2036", "UTC", now=late)
    assert prefect_fires(spec, late) == svrctl_fires("0 30 2 29 3 * 2026-2036", "UTC", late)


def test_refusal_checks_years_far_ahead() -> None:
    """Friday the 13th at 02:30 never meets a Berlin change; 31 March 02:30 does, in 2030."""
    to_prefect_schedule("0 30 2 13 * FRI", "Europe/Berlin", now=NOW)
    with pytest.raises(ScheduleNotRepresentable, match="on 2030-03-31"):
        to_prefect_schedule("0 30 2 31 3 *", "Europe/Berlin", now=NOW)


def test_rare_day_combination_stays_within_croniters_search() -> None:
    """29 February on a Monday: 2044, 2072, then 2112 (40 years; croniter gives up after 50)."""
    for tz in ["UTC", "Europe/Berlin"]:
        spec = to_prefect_schedule("0 0 0 29 2 MON", tz, now=NOW)
        assert prefect_fires(spec, NOW, 4) == svrctl_fires("0 0 0 29 2 MON", tz, NOW, 4)
    assert [t.year for t in svrctl_fires("0 0 0 29 2 MON", "UTC", NOW, 4)] == [
        2044,
        2072,
        2112,
        2140,
    ]


@pytest.mark.parametrize("tz", ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"])
def test_random_expressions_are_refused_exactly_when_they_differ(tz: str) -> None:
    """Seeded random hour/minute sets around the changes: accept iff no difference is found."""
    rng = random.Random(f"svrctl-{tz}")
    accepted = refused = 0
    for _ in range(25):
        hours = sorted({*rng.sample(range(24), rng.randint(1, 4)), rng.choice([1, 2, 3])})
        minutes = sorted(set(rng.sample([0, 15, 30, 45, 7], rng.randint(1, 3))))
        expr = f"0 {','.join(map(str, minutes))} {','.join(map(str, hours))} * * *"
        spec = candidate(expr, tz)
        differs = any(
            svrctl_fires(expr, tz, start) != prefect_fires(spec, start)
            for at, jump in TRANSITIONS[tz][:2]  # the changes of 2026
            for start in starts_around(at, jump)
        )
        try:
            to_prefect_schedule(expr, tz, now=NOW)
        except ScheduleNotRepresentable:
            refused += 1
            assert differs, expr
        else:
            accepted += 1
            assert not differs, expr
    assert accepted and refused


# --- year fields: an RRule, in UTC only -----------------------------------------------


def test_year_field_becomes_an_rrule() -> None:
    spec = to_prefect_schedule("0 30 9 * * * 2027,2029,2030", "UTC", now=NOW)
    assert spec.kind == "rrule"
    assert spec.rrule == (
        "DTSTART:20270101T000000\n"
        "RRULE:FREQ=YEARLY;INTERVAL=2;BYDAY=SU,MO,TU,WE,TH,FR,SA;BYHOUR=9;BYMINUTE=30;"
        "BYSECOND=0;UNTIL=20291231T235959\n"
        "RRULE:FREQ=YEARLY;INTERVAL=3;BYDAY=SU,MO,TU,WE,TH,FR,SA;BYHOUR=9;BYMINUTE=30;"
        "BYSECOND=0;UNTIL=20301231T235959"
    )
    after = datetime(2027, 12, 1, tzinfo=UTC)
    theirs = prefect_fires(spec, after, 400)
    assert theirs == svrctl_fires("0 30 9 * * * 2027,2029,2030", "UTC", after, 400)
    assert {t.year for t in theirs} == {2027, 2029, 2030}  # and not 2028


def test_croniter_year_field_loses_the_last_runs() -> None:
    """Why not a 7-field cron: once its years run out croniter raises, so nothing is planned."""
    from prefect._vendor.croniter.croniter import CroniterBadDateError
    from prefect.server.schemas.schedules import CronSchedule

    cron = CronSchedule(cron="0 0 1 1 * 0 2030,2032", timezone="UTC", day_or=False)
    start = datetime(2031, 11, 1, tzinfo=UTC)
    end = start + timedelta(days=100)  # the scheduler's default horizon
    with pytest.raises(CroniterBadDateError):
        list(cron._get_dates_generator(n=100, start=start, end=end))
    spec = to_prefect_schedule("0 0 0 1 1 * 2030,2032", "UTC", now=NOW)
    assert prefect_fires(spec, start) == [datetime(2032, 1, 1, tzinfo=UTC)]
    assert svrctl_fires("0 0 0 1 1 * 2030,2032", "UTC", start) == [datetime(2032, 1, 1, tzinfo=UTC)]


def test_year_2100_works_through_an_rrule() -> None:
    from prefect.server.schemas.schedules import CronSchedule

    with pytest.raises(ValidationError):
        CronSchedule(cron="0 0 1 1 * 0 2100", timezone="UTC", day_or=False)
    spec = to_prefect_schedule("0 0 0 1 1 * 2100", "UTC", now=NOW)
    assert prefect_fires(spec, NOW) == [datetime(2100, 1, 1, tzinfo=UTC)]


def test_a_schedule_already_over_never_fires() -> None:
    spec = to_prefect_schedule("* * * * * * 2025", "Europe/Berlin", now=NOW)
    assert spec.kind == "rrule" and spec.rrule is not None
    assert spec.rrule.startswith("DTSTART:20260101T000000\n")  # after its UNTIL: nothing to walk
    assert prefect_fires(spec, NOW) == [] == svrctl_fires("* * * * * * 2025", "Europe/Berlin", NOW)


def test_dateutil_gets_zones_wrong_after_2037() -> None:
    """Why an RRule needs UTC: even with full ("fat") zone files, dateutil stops at 2037."""
    spec = candidate("0 0 12 * * * 2040", "Europe/Berlin")
    after = datetime(2040, 6, 30, 12, tzinfo=UTC)
    assert svrctl_fires("0 0 12 * * * 2040", "Europe/Berlin", after, 1) == [
        datetime(2040, 7, 1, 10, tzinfo=UTC)  # 12:00 CEST
    ]
    assert prefect_fires(spec, after, 1) == [datetime(2040, 7, 1, 11, tzinfo=UTC)]  # as if CET
    with pytest.raises(ScheduleNotRepresentable, match="has a year field"):
        to_prefect_schedule("0 0 12 * * * 2040", "Europe/Berlin", now=NOW)


def test_dateutil_reads_slim_zone_files_as_utc() -> None:
    after = datetime(2027, 1, 4, tzinfo=UTC)
    spec = candidate("0 0 12 * * MON 2026-2027", "Asia/Kolkata")
    with slim_zone_files():
        theirs = prefect_fires(spec, after, 1)
    assert theirs == [datetime(2027, 1, 4, 12, tzinfo=UTC)]  # 12:00 read as UTC
    assert svrctl_fires("0 0 12 * * MON 2026-2027", "Asia/Kolkata", after, 1) == [
        datetime(2027, 1, 4, 6, 30, tzinfo=UTC)  # 12:00 IST
    ]


def test_year_field_in_a_zone_other_than_utc_is_refused_with_a_fix() -> None:
    with pytest.raises(ScheduleNotRepresentable) as caught:
        check_representable("0 0 12 * * MON 2027", "Asia/Kolkata", now=NOW)
    message = str(caught.value)
    assert message.startswith("schedule '0 0 12 * * MON 2027' has a year field")
    assert "dateutil" in message and "after 2037" in message and "slim" in message
    assert message.endswith(
        "To fix it, use the UTC time zone, or drop the year field and remove the task "
        "after its last run"
    )


def test_year_field_too_frequent_for_prefects_rrule_walk() -> None:
    """The one refusal that is not about a difference: Prefect would crawl through the runs."""
    with pytest.raises(ScheduleNotRepresentable) as caught:
        to_prefect_schedule("*/10 * * * * * 2027", "UTC", now=NOW)
    assert "would fire 3,153,600 times from the start of 2027 on" in str(caught.value)
    assert "walks through all of them" in str(caught.value)
    to_prefect_schedule("0 */5 * * * * 2027", "UTC", now=NOW)  # 105,120 runs: fine


def test_rrule_longer_than_prefect_accepts_is_refused() -> None:
    from prefect._internal.schemas.validators import MAX_RRULE_LENGTH

    assert MAX_RRULE_LENGTH == 6500
    primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]
    years = ",".join(str(2027 + p) for p in [0, *primes])
    with pytest.raises(ScheduleNotRepresentable, match="characters long, more than the 6500"):
        to_prefect_schedule(f"* * * 1 1 * {years}", "UTC", now=NOW)


# --- the rendering -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "cron", "day_or"),
    [
        ("0 */5 * * * *", "*/5 * * * *", False),
        ("0 0 * * * *", "0 * * * *", False),
        ("0 0 0 * * *", "0 0 * * *", False),
        ("0 0 12 * * MON", "0 12 * * 1", False),  # names become numbers, Monday = 1
        ("0 0 12 * * 1", "0 12 * * 0", False),  # seconds-first Sunday = 1 becomes 0
        ("0 0 12 * * SUN-SAT", "0 12 * * *", False),
        ("0 30 9,17 * * *", "30 9,17 * * *", False),
        ("30 15 8 1-7 * 2", "15 8 1-7 * 1 30", False),  # the seconds move to the end
        ("5/20 * * * * *", "* * * * * 5-45/20", False),
        ("0 1,2,5-7 * * * *", "1,2,5-7 * * * *", False),
        ("0 0 0 13 * FRI", "0 0 13 * 5", False),  # AND, unlike 5-field cron
        ("0 0 0 1 JAN-MAR *", "0 0 1 1-3 *", False),
        ("0 0 0 1 1 * *", "0 0 1 1 *", False),
        ("0 0 13 * 5", "0 0 13 * 5", True),  # standard: the Vixie OR rule
        ("0 0 */2 * 1", "0 0 */2 * 1", False),
        ("0 0 1-31 * 1", "0 0 * * *", False),  # OR with every day of the month: every day
        ("0 0 * * 7", "0 0 * * 0", False),
        ("0 0 * * 5-7", "0 0 * * 0,5,6", False),
        ("*/90 */5 * * *", "0 */5 * * *", False),
        ("@weekly", "0 0 * * 0", False),
    ],
)
def test_cron_rendering(expr: str, cron: str, day_or: bool) -> None:
    spec = to_prefect_schedule(expr, "UTC", now=NOW)
    assert (spec.kind, spec.cron, spec.day_or) == ("cron", cron, day_or)
    assert (spec.interval_seconds, spec.anchor, spec.rrule, spec.timezone) == (
        None,
        None,
        None,
        "UTC",
    )


def test_standard_expressions_are_never_refused() -> None:
    for expr in ["30 2 * * *", "30 1 * * *", "* * * * *", "@hourly"]:
        for tz in ZONES:
            assert to_prefect_schedule(expr, tz, now=NOW).kind == "cron"


# --- why no IntervalSchedule -------------------------------------------------------------


def test_interval_schedule_drops_the_repeated_hour_on_this_server() -> None:
    """Every 30 minutes in Berlin is exactly an interval, but Prefect's Python < 3.13 path
    de-duplicates wall times that compare equal, so 02:00 and 02:30 CET never run."""
    if sys.version_info >= (3, 13):
        pytest.skip("Prefect's Python 3.13 interval code path counts elapsed time")
    interval = PrefectScheduleSpec(
        "interval", None, None, 1800.0, datetime(2020, 1, 1, tzinfo=UTC), None, "Europe/Berlin"
    )
    after = datetime(2026, 10, 24, 23, 59, tzinfo=UTC)
    ours = svrctl_fires("0 */30 * * * *", "Europe/Berlin", after, 6)
    theirs = prefect_fires(interval, after, 6)
    assert ours == [
        datetime(2026, 10, 25, 0, 0, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(6)
    ]
    assert datetime(2026, 10, 25, 1, tzinfo=UTC) not in theirs  # 02:00 CET
    # svrctl writes it as a UTC cron instead, which keeps 02:00 and 02:30 CET.
    spec = to_prefect_schedule("0 */30 * * * *", "Europe/Berlin", now=NOW)
    assert (spec.kind, spec.timezone) == ("cron", "UTC")
    assert prefect_fires(spec, after, 6) == ours


# --- the spec and the API ------------------------------------------------------------


def test_to_prefect_builds_client_schedules() -> None:
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    cron = to_prefect_schedule("0 0 12 * * MON", "Europe/Berlin", now=NOW).to_prefect()
    assert isinstance(cron, CronSchedule)
    assert (cron.cron, cron.timezone, cron.day_or) == ("0 12 * * 1", "Europe/Berlin", False)
    rrule = to_prefect_schedule("0 0 0 1 1 * 2030", "UTC", now=NOW).to_prefect()
    assert isinstance(rrule, RRuleSchedule) and rrule.timezone == "UTC"
    anchor = datetime(2020, 1, 1, tzinfo=UTC)
    interval = PrefectScheduleSpec("interval", None, None, 300.0, anchor, None, "UTC").to_prefect()
    assert isinstance(interval, IntervalSchedule)
    assert interval.interval == timedelta(minutes=5) and interval.anchor_date == anchor


def test_spec_is_frozen_and_checked() -> None:
    spec = to_prefect_schedule("@daily", "UTC", now=NOW)
    with pytest.raises(AttributeError):
        spec.cron = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="incomplete 'cron'"):
        PrefectScheduleSpec("cron", None, None, None, None, None, "UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        PrefectScheduleSpec("interval", None, None, 60.0, datetime(2020, 1, 1), None, "UTC")


def test_errors() -> None:
    with pytest.raises(ScheduleNotRepresentable) as caught:
        check_representable("0 30 2 * * *", "Europe/Berlin", now=NOW)
    error = caught.value
    assert isinstance(error, CronError) and isinstance(error, BadInputError)
    assert (error.exit_code, error.field) == (2, "schedule")
    assert check_representable("0 30 2 * * *", "UTC") is None  # default `now`: the clock
    with pytest.raises(CronError, match="field 3 \\(hour\\) value 25") as bad:
        check_representable("0 0 25 * * *", "UTC")
    assert not isinstance(bad.value, ScheduleNotRepresentable)
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'") as zone:
        check_representable("@daily", "Mars/Olympus")
    assert zone.value.field == "timezone"


@pytest.mark.parametrize(
    ("expr", "tz", "fragment", "five_field"),
    [
        ("30 0 2 * * *", "Europe/Berlin", "so 02:00:30 does not exist", None),  # seconds
        ("0 30 1 1-7 * SUN", "America/New_York", "so 01:30 happens twice", None),  # AND days
        ("0 30 1 * * SUN", "America/New_York", "so 01:30 happens twice", "30 1 * * 0"),
        ("0 45 1 * * *", "Australia/Lord_Howe", "back from 02:00 to 01:30, so 01:45", "45 1 * * *"),
    ],
)
def test_refusal_messages(expr: str, tz: str, fragment: str, five_field: str | None) -> None:
    with pytest.raises(ScheduleNotRepresentable) as caught:
        to_prefect_schedule(expr, tz, now=NOW)
    message = str(caught.value)
    assert message.startswith(f"schedule '{expr}' cannot run in {tz} under Prefect exactly")
    assert fragment in message
    assert "use the UTC time zone" in message and "keep every run out of" in message
    if five_field is None:
        assert "5-field" not in message
    else:
        assert f"write it as the 5-field expression '{five_field}'" in message


def test_check_is_fast_and_imports_no_prefect() -> None:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from svrctl.schedules import check_representable\n"
        "check_representable('0 0 9 * * MON-FRI', 'Europe/Berlin')\n"
        "check_representable('0 0 * * * *', 'UTC')\n"
        "elapsed = time.perf_counter() - t\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('prefect', 'croniter', 'dateutil', 'whenever', 'pendulum', 'pydantic')]\n"
        "assert not heavy, heavy\n"
        "print(elapsed)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout) < 1.0
    started = time.perf_counter()
    to_prefect_schedule("0 0 9 * * MON-FRI", "Australia/Lord_Howe", now=NOW)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("expr", ["0 */5 * * * *", "0 0 * * * *", "*/10 * * * * *"])
def test_clock_free_schedules_in_daylight_saving_zones_become_utc(expr: str, tz: str) -> None:
    # The seed's own examples: they fire twice in a repeated hour, which only a UTC
    # schedule can say; the rewrite must keep every instant.
    spec = to_prefect_schedule(expr, tz, now=NOW)
    assert spec.timezone == "UTC"
    for start in starts(tz):
        assert prefect_fires(spec, start) == svrctl_fires(expr, tz, start)


def test_clock_free_schedule_in_a_half_hour_shift_zone_is_still_refused() -> None:
    with pytest.raises(ScheduleNotRepresentable):
        to_prefect_schedule("0 0 * * * *", "Australia/Lord_Howe", now=NOW)
