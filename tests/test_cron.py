"""Tests for svrctl.cron: the three dialects, the day rules, DST, and parity with croniter."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from svrctl.cron import CronError, CronSchedule, describe, next_fire_times, parse_cron
from svrctl.exceptions import BadInputError

try:  # the stand-alone package when installed, else the copy Prefect vendors and uses
    from croniter import croniter  # type: ignore[import-not-found]
except ImportError:
    from prefect._vendor.croniter import croniter

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(expr: str, after: datetime, count: int, tz: str = "UTC") -> list[datetime]:
    return next_fire_times(parse_cron(expr), after, count, tz)


def as_utc(times: list[datetime]) -> list[datetime]:
    return [t.astimezone(UTC) for t in times]


# --- the examples of the contract ------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 */5 * * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 10)]),
        ("0 0 * * * *", utc(2024, 1, 1, 0, 30), [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)]),
        ("0 0 0 * * *", utc(2024, 1, 1, 12), [utc(2024, 1, 2), utc(2024, 1, 3)]),
        # 2024-01-01 is a Monday; "strictly after" skips the fire time equal to `after`
        ("0 0 12 * * MON", utc(2024, 1, 1, 12), [utc(2024, 1, 8, 12), utc(2024, 1, 15, 12)]),
        (
            "0 30 9,17 * * *",
            utc(2024, 1, 1, 10),
            [utc(2024, 1, 1, 17, 30), utc(2024, 1, 2, 9, 30), utc(2024, 1, 2, 17, 30)],
        ),
    ],
)
def test_contract_examples(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(expr, after, len(expected)) == expected
    assert parse_cron(expr).dialect == "seconds-first"


def test_contract_example_sets() -> None:
    s = parse_cron("0 30 9,17 * * *")
    assert (s.seconds, s.minutes, s.hours) == ({0}, {30}, {9, 17})
    assert s.days_of_month == frozenset(range(1, 32))
    assert s.months == frozenset(range(1, 13))
    assert s.days_of_week == frozenset(range(7))
    assert s.years is None
    assert s.day_or is False
    assert s.text == "0 30 9,17 * * *"
    assert parse_cron("0 */5 * * * *").minutes == frozenset(range(0, 60, 5))


# --- fields: ranges, steps, lists, names ---------------------------------------------


@pytest.mark.parametrize(
    ("expr", "attr", "expected"),
    [
        ("0 0-10/5 * * * *", "minutes", {0, 5, 10}),
        ("5/10 * * * * *", "seconds", {5, 15, 25, 35, 45, 55}),
        ("*/15 * * * * *", "seconds", {0, 15, 30, 45}),
        ("0 1,2,5-7 * * * *", "minutes", {1, 2, 5, 6, 7}),
        ("0 *,5 * * * *", "minutes", set(range(60))),
        ("0 0 0 */10 * *", "days_of_month", {1, 11, 21, 31}),
        ("0 0 0 * */5 *", "months", {1, 6, 11}),
        ("0 0 0 * JAN-MAR,dec *", "months", {1, 2, 3, 12}),
        ("0 0 0 * January,february *", "months", {1, 2}),
        ("0 0 0 * * MON-FRI", "days_of_week", {1, 2, 3, 4, 5}),
        ("0 0 0 * * mon-fri", "days_of_week", {1, 2, 3, 4, 5}),
        ("0 0 0 * * Mon-Fri/2", "days_of_week", {1, 3, 5}),
        ("0 0 0 * * Monday,Tues,thurs,SATURDAY", "days_of_week", {1, 2, 4, 6}),
        ("0 0 0 * * */2", "days_of_week", {0, 2, 4, 6}),  # 1,3,5,7 = Sun,Tue,Thu,Sat
        ("0 0 0 ? * MON", "days_of_month", set(range(1, 32))),
        ("0 0 0 1 * ?", "days_of_week", set(range(7))),
        ("0 0 0 1 * ?/2", "days_of_week", {0, 2, 4, 6}),
        ("0 0 0 1 1 * 2030/10", "years", {2030, 2040, 2050, 2060, 2070, 2080, 2090, 2100}),
        ("*/20 * * * *", "minutes", {0, 20, 40}),
        ("10/20 * * * *", "minutes", {10, 30, 50}),
        ("*/90 * * * *", "minutes", {0}),
        ("0 22-23,0-2 * * *", "hours", {22, 23, 0, 1, 2}),
        ("0 0 * 2/5 *", "months", {2, 7, 12}),
        ("0 0 * * 5-7", "days_of_week", {5, 6, 0}),
        ("0 0 * * 1-7/2", "days_of_week", {1, 3, 5, 0}),
        ("0 0 * * 0-7", "days_of_week", set(range(7))),
        ("0 0 * * mon-fri/2", "days_of_week", {1, 3, 5}),
        ("0 0 * * Sat,SUN", "days_of_week", {6, 0}),
        ("0 0 * * *", "seconds", {0}),
    ],
)
def test_field_sets(expr: str, attr: str, expected: set[int]) -> None:
    assert getattr(parse_cron(expr), attr) == frozenset(expected)


def test_steps_fire_as_expected() -> None:
    assert fires("5/20 0 0 * * *", utc(2024, 1, 1), 3) == [
        utc(2024, 1, 1, 0, 0, 5),
        utc(2024, 1, 1, 0, 0, 25),
        utc(2024, 1, 1, 0, 0, 45),
    ]


# --- day-of-week numbering -----------------------------------------------------------


def test_seconds_first_counts_sunday_as_one() -> None:
    sunday, saturday = parse_cron("0 0 0 * * 1"), parse_cron("0 0 0 * * 7")
    assert sunday.days_of_week == {0}
    assert saturday.days_of_week == {6}
    assert next_fire_times(sunday, utc(2024, 1, 1), 1, "UTC") == [utc(2024, 1, 7)]
    assert next_fire_times(saturday, utc(2024, 1, 1), 1, "UTC") == [utc(2024, 1, 6)]
    with pytest.raises(CronError, match=r"field 6 \(day of week\) value 0 is out of range 1-7"):
        parse_cron("0 0 0 * * 0")


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN", "Sun"])
def test_standard_sunday_is_zero_or_seven(dow: str) -> None:
    schedule = parse_cron(f"0 0 * * {dow}")
    assert schedule.days_of_week == {0}
    assert next_fire_times(schedule, utc(2024, 1, 1), 1, "UTC") == [utc(2024, 1, 7)]


def test_standard_monday_is_one() -> None:
    schedule = parse_cron("0 12 * * 1")
    assert schedule.days_of_week == {1}
    assert next_fire_times(schedule, utc(2024, 1, 1, 12), 1, "UTC") == [utc(2024, 1, 8, 12)]


# --- the day rule ---------------------------------------------------------------------


def test_standard_vixie_or_rule() -> None:
    schedule = parse_cron("0 0 13 * FRI")
    assert schedule.day_or is True
    # every Friday, and every 13th whatever its weekday (2024-10-13 is a Sunday)
    assert fires("0 0 13 * FRI", utc(2024, 9, 1), 8) == [
        utc(2024, 9, 6),
        utc(2024, 9, 13),
        utc(2024, 9, 20),
        utc(2024, 9, 27),
        utc(2024, 10, 4),
        utc(2024, 10, 11),
        utc(2024, 10, 13),
        utc(2024, 10, 18),
    ]


def test_seconds_first_and_rule() -> None:
    schedule = parse_cron("0 0 0 13 * FRI")
    assert schedule.day_or is False
    assert fires("0 0 0 13 * FRI", utc(2024, 9, 1), 4) == [  # Friday the 13ths
        utc(2024, 9, 13),
        utc(2024, 12, 13),
        utc(2025, 6, 13),
        utc(2026, 2, 13),
    ]


def test_standard_star_day_field_means_and() -> None:
    schedule = parse_cron("0 0 */2 * 1")  # starts with '*': odd days that are Mondays
    assert schedule.day_or is False
    assert next_fire_times(schedule, utc(2024, 1, 1), 4, "UTC") == [
        utc(2024, 1, 15),
        utc(2024, 1, 29),
        utc(2024, 2, 5),
        utc(2024, 2, 19),
    ]


@pytest.mark.parametrize("expr", ["0 0 1 * ?", "0 0 ? * 1", "0 0 * * 1", "0 0 1 * *", "@weekly"])
def test_day_or_off_unless_both_day_fields_restricted(expr: str) -> None:
    assert parse_cron(expr).day_or is False


def test_matches() -> None:
    s = parse_cron("0 30 9 * * MON")
    assert s.matches(datetime(2024, 1, 1, 9, 30))
    assert not s.matches(datetime(2024, 1, 1, 9, 30, 1))
    assert not s.matches(datetime(2024, 1, 2, 9, 30))
    vixie = parse_cron("0 0 13 * fri")
    assert vixie.matches(datetime(2024, 10, 13))  # Sunday the 13th
    assert vixie.matches(datetime(2024, 10, 4))  # a Friday
    assert not vixie.matches(datetime(2024, 10, 5))
    yearly = parse_cron("0 0 0 1 1 * 2030")
    assert yearly.matches(datetime(2030, 1, 1))
    assert not yearly.matches(datetime(2031, 1, 1))


# --- the year field -------------------------------------------------------------------


def test_year_field_and_running_out() -> None:
    assert fires("0 0 0 1 1 * 2030,2032", utc(2025, 6, 1), 5) == [utc(2030, 1, 1), utc(2032, 1, 1)]
    assert fires("0 0 0 1 1 * 2020", utc(2025, 6, 1), 5) == []
    assert fires("0 0 0 1 1 * 2030/10", utc(2025, 1, 1), 100)[-1] == utc(2100, 1, 1)
    assert parse_cron("0 0 0 1 1 * *").years is None
    assert parse_cron("0 0 0 1 1 * 2025-2027").years == {2025, 2026, 2027}


# --- macros ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("macro", "equivalent", "after", "first"),
    [
        ("@hourly", "0 * * * *", utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 1)),
        ("@daily", "0 0 * * *", utc(2024, 1, 1, 12), utc(2024, 1, 2)),
        ("@midnight", "0 0 * * *", utc(2024, 1, 1, 12), utc(2024, 1, 2)),
        ("@weekly", "0 0 * * 0", utc(2024, 1, 1), utc(2024, 1, 7)),
        ("@monthly", "0 0 1 * *", utc(2024, 1, 1), utc(2024, 2, 1)),
        ("@yearly", "0 0 1 1 *", utc(2024, 1, 1), utc(2025, 1, 1)),
        ("@annually", "0 0 1 1 *", utc(2024, 1, 1), utc(2025, 1, 1)),
        ("@DAILY", "0 0 * * *", utc(2024, 1, 1, 12), utc(2024, 1, 2)),
    ],
)
def test_macros(macro: str, equivalent: str, after: datetime, first: datetime) -> None:
    schedule = parse_cron(macro)
    plain = parse_cron(equivalent)
    assert schedule.dialect == "macro"
    assert schedule.text == macro
    fields = ("seconds", "minutes", "hours", "days_of_month", "months", "days_of_week", "years")
    for name in (*fields, "day_or"):
        assert getattr(schedule, name) == getattr(plain, name)
    assert next_fire_times(schedule, after, 1, "UTC") == [first]


# --- invalid input names its field ----------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("1 2 3", "it has 3 fields"),
        ("1 2 3 4 5 6 2030 8", "it has 8 fields"),
        ("@fortnightly", "unknown macro"),
        ("@daily 5", "unknown macro"),
        ("60 * * * * *", "field 1 (second) value 60 is out of range 0-59"),
        ("0 24 * * *", "field 2 (hour) value 24 is out of range 0-23"),
        ("0 0 0 0 * *", "field 4 (day of month) value 0 is out of range 1-31"),
        ("0 0 0 * 13 *", "field 5 (month) value 13 is out of range 1-12"),
        ("0 0 0 * * 8", "field 6 (day of week) value 8 is out of range 1-7"),
        ("0 0 * * 8", "field 5 (day of week) value 8 is out of range 0-7"),
        ("0 0 0 1 1 * 1969", "field 7 (year) value 1969 is out of range 1970-2100"),
        ("0 0 0 1 1 * 2101", "field 7 (year) value 2101 is out of range 1970-2100"),
        ("*/0 * * * * *", "field 1 (second) step 0 in '*/0' must be between 1 and 59"),
        ("*/60 * * * * *", "field 1 (second) step 60 in '*/60' must be between 1 and 59"),
        ("*/0 * * * *", "field 1 (minute) step 0 in '*/0' must be at least 1"),
        ("*/x * * * *", "field 1 (minute) step 'x' in '*/x' is not a whole number"),
        ("0 0 0 * * FOO", "field 6 (day of week) has an unknown name 'FOO'"),
        ("0 0 * * monday", "field 5 (day of week) has an unknown name 'monday'"),
        ("0 0 * JANUARY *", "field 4 (month) has an unknown name 'JANUARY'"),
        ("0 MON * * *", "field 2 (hour) does not accept names ('MON')"),
        ("0 0 0 * * Wed/4", "field 6 (day of week) 'Wed/4': a step needs a number"),
        ("0 0 0 * * 2-FRI", "field 6 (day of week) range '2-FRI' mixes a number and a name"),
        ("0 5-1 * * *", "field 2 (hour) range '5-1' runs backwards"),
        ("0 0 * * FRI-MON", "field 5 (day of week) range 'FRI-MON' runs backwards"),
        ("5-5 * * * *", "field 1 (minute) range '5-5' starts and ends at the same value"),
        ("-5 * * * *", "field 1 (minute) range '-5' is missing an end"),
        ("? * * * *", "field 1 (minute) does not accept '?'"),
        ("0 0 ?/2 * *", "field 3 (day of month) '?/2': '?' cannot take a step"),
        ("0 0 1,,2 * *", "field 3 (day of month) '1,,2' has an empty list item"),
        ("0 0 0 L * *", "field 4 (day of month) 'L': the L, W and # forms are not supported"),
        ("0 0 15W * *", "field 3 (day of month) '15W': the L, W and # forms are not supported"),
        ("0 0 * * 5#3", "field 5 (day of week) '5#3': the L, W and # forms are not supported"),
        ("0 0 * * 1,*", "field 5 (day of week) '1,*': '*' and '?' cannot be combined"),
        ("0 0 1.5 * *", "field 3 (day of month) value '1.5' is not a number"),
        ("0 0 0 31 2 *", "field 4 (day of month) never matches"),
        ("0 0 30 2 *", "field 3 (day of month) never matches"),
        ("0 0 0 31 4,6,9,11 *", "field 4 (day of month) never matches"),
        ("0 0 0 29 2 * 2025", "field 4 (day of month) never matches"),
        ("0 0 0 13 2 FRI 2025", "field 4 (day of month) never matches"),
    ],
)
def test_invalid_expressions(expr: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert message in str(info.value)
    assert str(info.value).startswith("invalid cron expression")
    assert isinstance(info.value, BadInputError)
    assert info.value.exit_code == 2


def test_error_message_format() -> None:
    with pytest.raises(CronError) as info:
        parse_cron("0 0 25 * * *")
    assert str(info.value) == (
        "invalid cron expression '0 0 25 * * *': field 3 (hour) value 25 is out of range 0-23"
    )


def test_not_a_string() -> None:
    with pytest.raises(CronError, match="must be a string"):
        parse_cron(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "expr", ["0 0 31 2 1", "0 0 0 13 * FRI 2026", "0 0 0 29 2 * 2028", "0 0 0 29 2 MON"]
)
def test_rare_but_possible_expressions_parse(expr: str) -> None:
    parse_cron(expr)


# --- performance and bounded search ---------------------------------------------------


def test_leap_day_is_fast() -> None:
    started = time.perf_counter()
    result = fires("0 0 0 29 2 *", utc(2025, 1, 1), 50)
    assert time.perf_counter() - started < 0.25
    assert len(result) == 50
    assert result[:3] == [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29)]
    assert utc(2096, 2, 29) in result and utc(2104, 2, 29) in result  # 2100 is no leap year
    assert result[-1] == utc(2232, 2, 29)


def test_leap_day_on_a_monday() -> None:
    assert fires("0 0 0 29 2 MON", utc(2025, 1, 1), 3) == [
        utc(2044, 2, 29),
        utc(2072, 2, 29),
        utc(2112, 2, 29),
    ]


def test_every_second_is_fast() -> None:
    started = time.perf_counter()
    result = fires("* * * * * *", utc(2024, 11, 3, 5, 30), 500, "America/New_York")
    assert time.perf_counter() - started < 0.25
    assert as_utc(result)[0] == utc(2024, 11, 3, 5, 30, 1)
    assert as_utc(result)[-1] == utc(2024, 11, 3, 5, 38, 20)


# --- next_fire_times API --------------------------------------------------------------


def test_next_fire_times_api() -> None:
    s = parse_cron("0 */5 * * * *")
    assert next_fire_times(s, utc(2024, 1, 1, 0, 5), 1, "UTC") == [utc(2024, 1, 1, 0, 10)]
    almost = utc(2024, 1, 1, 0, 4, 59) + timedelta(microseconds=500)
    assert next_fire_times(s, almost, 1, "UTC") == [utc(2024, 1, 1, 0, 5)]
    assert next_fire_times(s, utc(2024, 1, 1), 0, "UTC") == []
    result = next_fire_times(s, utc(2024, 1, 1), 1, BERLIN)
    assert result == [datetime(2024, 1, 1, 1, 5, tzinfo=BERLIN)]
    assert str(result[0].tzinfo) == "Europe/Berlin"
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_times(s, datetime(2024, 1, 1), 1, "UTC")
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        next_fire_times(s, utc(2024, 1, 1), 1, "Mars/Olympus")


def test_describe() -> None:
    assert describe(parse_cron("0 */5 * * * *")) == "every 5 minutes"
    assert describe(parse_cron("0 0 * * * *")) == "at minute 0 of every hour"
    assert describe(parse_cron("0 0 12 * * MON")) == "at 12:00 on Monday"
    assert describe(parse_cron("0 30 9,17 * * *")) == "at 09:30 and 17:30 every day"
    assert describe(parse_cron("0 9 13 * fri")) == "at 09:00 on day 13 of the month or on Friday"


# --- daylight saving time: seconds-first (both occurrences, skipped times skipped) ------


def test_seconds_first_spring_forward_skips() -> None:
    # New York, 2024-03-10: 02:00 EST jumps to 03:00 EDT
    assert as_utc(
        fires("0 30 2 * * *", datetime(2024, 3, 9, 12, tzinfo=NY), 2, "America/New_York")
    ) == [
        utc(2024, 3, 11, 6, 30),  # 02:30 EDT on the 11th; the 10th has no 02:30
        utc(2024, 3, 12, 6, 30),
    ]
    assert as_utc(
        fires("0 0 * * * *", datetime(2024, 3, 10, 0, 30, tzinfo=NY), 3, "America/New_York")
    ) == [
        utc(2024, 3, 10, 6),  # 01:00 EST
        utc(2024, 3, 10, 7),  # 03:00 EDT
        utc(2024, 3, 10, 8),
    ]


def test_seconds_first_fall_back_fires_twice() -> None:
    # New York, 2024-11-03: 02:00 EDT goes back to 01:00 EST
    result = fires("0 30 1 * * *", datetime(2024, 11, 2, 12, tzinfo=NY), 3, "America/New_York")
    assert as_utc(result) == [
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 3, 6, 30),
        utc(2024, 11, 4, 6, 30),
    ]
    assert [t.utcoffset() for t in result] == [timedelta(hours=h) for h in (-4, -5, -5)]


def test_seconds_first_fall_back_is_chronological() -> None:
    result = fires("0 */20 * * * *", datetime(2024, 11, 3, 0, 50, tzinfo=NY), 7, "America/New_York")
    assert as_utc(result) == [
        utc(2024, 11, 3, 5, 0),
        utc(2024, 11, 3, 5, 20),
        utc(2024, 11, 3, 5, 40),
        utc(2024, 11, 3, 6, 0),
        utc(2024, 11, 3, 6, 20),
        utc(2024, 11, 3, 6, 40),
        utc(2024, 11, 3, 7, 0),
    ]
    assert [t.hour for t in result] == [1, 1, 1, 1, 1, 1, 2]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (
            utc(2024, 11, 3, 5, 30),
            [utc(2024, 11, 3, 5, 40), utc(2024, 11, 3, 6), utc(2024, 11, 3, 6, 20)],
        ),
        (
            utc(2024, 11, 3, 6, 10),
            [utc(2024, 11, 3, 6, 20), utc(2024, 11, 3, 6, 40), utc(2024, 11, 3, 7)],
        ),
    ],
)
def test_seconds_first_starting_inside_the_repeated_hour(
    after: datetime, expected: list[datetime]
) -> None:
    assert as_utc(fires("0 */20 * * * *", after, 3, "America/New_York")) == expected


def test_seconds_first_berlin() -> None:
    # Berlin: 2024-03-31 02:00 CET -> 03:00 CEST; 2024-10-27 03:00 CEST -> 02:00 CET
    spring = fires("0 30 2 * * *", datetime(2024, 3, 30, 12, tzinfo=BERLIN), 2, "Europe/Berlin")
    assert as_utc(spring) == [utc(2024, 4, 1, 0, 30), utc(2024, 4, 2, 0, 30)]
    autumn = fires("0 30 2 * * *", datetime(2024, 10, 26, 12, tzinfo=BERLIN), 3, "Europe/Berlin")
    assert as_utc(autumn) == [
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 27, 1, 30),
        utc(2024, 10, 28, 1, 30),
    ]


# --- daylight saving time: standard (first occurrence once, skipped times shifted) -----


def test_standard_spring_forward_shifts() -> None:
    result = fires("30 2 * * *", datetime(2024, 3, 30, 12, tzinfo=BERLIN), 2, "Europe/Berlin")
    assert as_utc(result) == [utc(2024, 3, 31, 1, 30), utc(2024, 4, 1, 0, 30)]
    assert (result[0].hour, result[0].minute) == (3, 30)  # 02:30 does not exist: 03:30 CEST
    assert as_utc(
        fires("0 * * * *", datetime(2024, 3, 31, 0, 30, tzinfo=BERLIN), 3, "Europe/Berlin")
    ) == [
        utc(2024, 3, 31, 0),  # 01:00 CET
        utc(2024, 3, 31, 1),  # 03:00 CEST (02:00 shifted onto it, fired once)
        utc(2024, 3, 31, 2),
    ]
    assert as_utc(
        fires("30 2 * * *", datetime(2024, 3, 9, 12, tzinfo=NY), 1, "America/New_York")
    ) == [
        utc(2024, 3, 10, 7, 30)  # 03:30 EDT
    ]


def test_standard_spring_forward_starting_after_the_jump() -> None:
    after = utc(2024, 3, 31, 1, 10)  # 03:10 CEST, just after the jump
    assert as_utc(fires("30 2 * * *", after, 1, "Europe/Berlin")) == [utc(2024, 3, 31, 1, 30)]
    assert as_utc(fires("*/20 * * * *", after, 3, "Europe/Berlin")) == [
        utc(2024, 3, 31, 1, 20),
        utc(2024, 3, 31, 1, 40),
        utc(2024, 3, 31, 2, 0),
    ]


def test_standard_fall_back_fires_once() -> None:
    result = fires("30 2 * * *", datetime(2024, 10, 26, 12, tzinfo=BERLIN), 2, "Europe/Berlin")
    assert as_utc(result) == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]
    assert result[0].utcoffset() == timedelta(hours=2)  # the first 02:30, still CEST
    assert as_utc(
        fires("*/20 * * * *", datetime(2024, 10, 27, 1, 50, tzinfo=BERLIN), 6, "Europe/Berlin")
    ) == [
        utc(2024, 10, 27, 0, 0),  # 02:00 CEST
        utc(2024, 10, 27, 0, 20),
        utc(2024, 10, 27, 0, 40),
        utc(2024, 10, 27, 2, 0),  # 03:00 CET: the repeated 02:xx CET do not fire
        utc(2024, 10, 27, 2, 20),
        utc(2024, 10, 27, 2, 40),
    ]
    # starting inside the second pass of the repeated hour (02:10 CET)
    assert as_utc(fires("*/20 * * * *", utc(2024, 10, 27, 1, 10), 1, "Europe/Berlin")) == [
        utc(2024, 10, 27, 2, 0)
    ]


def test_macro_uses_standard_dst_rules() -> None:
    result = fires("@hourly", datetime(2024, 11, 3, 0, 30, tzinfo=NY), 3, "America/New_York")
    assert as_utc(result) == [utc(2024, 11, 3, 5), utc(2024, 11, 3, 7), utc(2024, 11, 3, 8)]


# --- parity with croniter and with Prefect's CronSchedule ---------------------------------

PARITY_EXPRESSIONS = [
    "*/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 2 * * *",
    "15,45 1-3 * * *",
    "0 0 13 * 5",
    "0 12 */2 * 1",
    "0 9 * * mon-fri",
    "0 0 1 */3 *",
    "5 4 * * sun",
    "0 0 29 2 *",
    "0 22-23,0-3 * * 6,0",
    "@hourly",
    "@weekly",
]
PARITY_STARTS = [
    ("UTC", datetime(2024, 3, 9, 20)),
    ("America/New_York", datetime(2024, 3, 9, 20)),
    ("America/New_York", datetime(2024, 11, 2, 20)),
    ("Europe/Berlin", datetime(2024, 3, 30, 20)),
    ("Europe/Berlin", datetime(2024, 10, 26, 20, 59, 30)),
    ("Australia/Sydney", datetime(2024, 4, 6, 20)),
    ("Australia/Sydney", datetime(2024, 10, 5, 20)),
    ("America/Sao_Paulo", datetime(2018, 11, 3, 12)),  # DST began at midnight
    ("America/Sao_Paulo", datetime(2019, 2, 16, 12)),  # and ended at midnight
    ("Australia/Lord_Howe", datetime(2024, 10, 5, 20)),  # a 30-minute jump
    ("Pacific/Apia", datetime(2011, 12, 29, 12)),  # 2011-12-30 was skipped entirely
    ("Asia/Kathmandu", datetime(2024, 1, 1)),
]


def croniter_reference(expr: str, day_or: bool, tz: str, after: datetime, n: int) -> list[datetime]:
    """Fire times as Prefect computes them: croniter on naive wall times, fold=0, no repeats."""
    zone = ZoneInfo(tz)
    it = croniter(
        expr, after.astimezone(zone).replace(tzinfo=None) - timedelta(days=1), day_or=day_or
    )
    found: set[datetime] = set()
    while True:
        instant = it.get_next(datetime).replace(tzinfo=zone, fold=0).astimezone(UTC)
        if instant > after:
            found.add(instant)
        if len(found) >= n and instant > sorted(found)[n - 1] + timedelta(hours=3):
            return sorted(found)[:n]


def prefect_reference(expr: str, day_or: bool, tz: str, after: datetime, n: int) -> list[datetime]:
    from prefect.server.schemas.schedules import CronSchedule as PrefectCronSchedule

    schedule = PrefectCronSchedule(cron=expr, timezone=tz, day_or=day_or)
    dates = asyncio.run(schedule.get_dates(n=n, start=after + timedelta(microseconds=1)))
    return [datetime.fromtimestamp(d.timestamp(), UTC) for d in dates]


@pytest.mark.parametrize(("tz", "wall"), PARITY_STARTS)
@pytest.mark.parametrize("expr", PARITY_EXPRESSIONS)
def test_parity_with_croniter(expr: str, tz: str, wall: datetime) -> None:
    schedule = parse_cron(expr)
    after = wall.replace(tzinfo=ZoneInfo(tz))
    ours = next_fire_times(schedule, after, 50, tz)
    assert as_utc(ours) == croniter_reference(expr, schedule.day_or, tz, after, 50)
    assert all(str(t.tzinfo) == tz for t in ours)


@pytest.mark.parametrize(("tz", "wall"), [s for s in PARITY_STARTS if s[0] != "UTC"])
@pytest.mark.parametrize(
    "expr", ["*/15 * * * *", "30 2 * * *", "0 12 */2 * 1", "0 0 13 * 5", "0 * * * *"]
)
def test_parity_with_prefect_cron_schedule(expr: str, tz: str, wall: datetime) -> None:
    schedule = parse_cron(expr)
    after = wall.replace(tzinfo=ZoneInfo(tz))
    ours = next_fire_times(schedule, after, 50, tz)
    assert as_utc(ours) == prefect_reference(expr, schedule.day_or, tz, after, 50)


@pytest.mark.parametrize(
    "expr",
    [
        "*/7 1-5,20 * * *",
        "10/20 0 1,15 jan-mar *",
        "0 0 * * 5-7",
        "0 0 * * 1-7/2",
        "0 0 * * 2-7/2",
        "0 0 * * mon-fri/2",
        "0 0 */5 */2 *",
        "0 0 ? * 0,7",
        "*/90 */5 * * *",
    ],
)
def test_field_sets_match_croniter_expand(expr: str) -> None:
    ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
    expanded, _ = croniter.expand(expr)
    theirs = [
        set(range(lo, hi + 1)) if "*" in values else {int(v) for v in values}
        for values, (lo, hi) in zip(expanded, ranges, strict=True)
    ]
    s: CronSchedule = parse_cron(expr)
    assert [s.minutes, s.hours, s.days_of_month, s.months, s.days_of_week] == theirs
