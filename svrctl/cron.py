"""Cron expressions: parse the three accepted dialects and compute fire times.

Pure standard library on purpose, because the CLI imports this module on every start.
The rules (fields, numbering, the day rule, daylight saving time) are described for
users in ``docs/cron.md``.

* ``seconds-first``: 6 or 7 fields ``sec min hour dom month dow [year]``, with the
  semantics of the Rust ``cron`` crate: Sunday is 1, day of month AND day of week,
  repeated wall times (clocks set back) fire twice, skipped wall times never fire.
* ``standard``: 5 fields ``min hour dom month dow``, Sunday is 0 or 7, the Vixie
  OR rule for the two day fields, and the daylight saving behaviour of Prefect's
  croniter-based ``CronSchedule``: a repeated wall time fires once (the first
  time), a skipped wall time fires shifted forward by the size of the jump.
* ``macro``: ``@hourly`` and friends, which mean their 5-field equivalents.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from svrctl.exceptions import BadInputError

__all__ = ["CronError", "CronSchedule", "describe", "next_fire_times", "parse_cron"]

Dialect = Literal["seconds-first", "standard", "macro"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS_LONG = (
    *("january", "february", "march", "april", "may", "june"),
    *("july", "august", "september", "october", "november", "december"),
)
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAYS_LONG = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MAX_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MAX_YEAR = 9998  # stay clear of datetime.max when converting between zones

_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


class CronError(BadInputError):
    """A cron expression that cannot be parsed, or that can never fire."""


@dataclass(frozen=True)
class _Spec:
    """How one field of one dialect is read."""

    label: str
    lo: int
    hi: int
    names: Mapping[str, int] | None = None
    any_ok: bool = False  # '?' accepted (the two day fields)
    open_hi: int | None = None  # end of '*' and 'a/n' when below hi (standard dow: 6)


_STD_MONTH_NAMES = {n: i + 1 for i, n in enumerate(_MONTHS)}
_STD_DAY_NAMES = {n: i for i, n in enumerate(_DAYS)}
_SF_MONTH_NAMES = _STD_MONTH_NAMES | {n: i + 1 for i, n in enumerate(_MONTHS_LONG)}
_SF_DAY_NAMES = {n: i + 1 for i, n in enumerate(_DAYS)} | {"tues": 3, "thurs": 5}
_SF_DAY_NAMES |= {n: i + 1 for i, n in enumerate(_DAYS_LONG)}

_SECONDS_FIRST = (
    _Spec("second", 0, 59),
    _Spec("minute", 0, 59),
    _Spec("hour", 0, 23),
    _Spec("day of month", 1, 31, any_ok=True),
    _Spec("month", 1, 12, _SF_MONTH_NAMES),
    _Spec("day of week", 1, 7, _SF_DAY_NAMES, any_ok=True),
    _Spec("year", 1970, 2100),
)
_STANDARD = (
    _Spec("minute", 0, 59),
    _Spec("hour", 0, 23),
    _Spec("day of month", 1, 31, any_ok=True),
    _Spec("month", 1, 12, _STD_MONTH_NAMES),
    _Spec("day of week", 0, 7, _STD_DAY_NAMES, any_ok=True, open_hi=6),
)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: the set of allowed values of every field."""

    text: str
    dialect: Dialect
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0=Sunday .. 6=Saturday, whatever the dialect
    years: frozenset[int] | None  # None = any year
    day_or: bool  # True when a day matches if EITHER day field matches (Vixie rule)

    def day_matches(self, day: date) -> bool:
        """Tell whether the schedule allows this calendar day (year and month included)."""
        if self.years is not None and day.year not in self.years:
            return False
        return day.month in self.months and self._day_ok(day.day, (day.weekday() + 1) % 7)

    def matches(self, local: datetime) -> bool:
        """Tell whether a naive local wall time is a fire time (microseconds are ignored)."""
        return (
            self.day_matches(local.date())
            and local.hour in self.hours
            and local.minute in self.minutes
            and local.second in self.seconds
        )

    def _day_ok(self, dom: int, dow: int) -> bool:
        if self.day_or:
            return dom in self.days_of_month or dow in self.days_of_week
        return dom in self.days_of_month and dow in self.days_of_week


def parse_cron(text: str) -> CronSchedule:
    """Parse a cron expression in any of the three dialects.

    Args:
        text: 5 fields (standard), 6 or 7 fields (seconds-first) or a macro.

    Returns:
        The parsed schedule.

    Raises:
        CronError: the expression is malformed or can never fire; the message names
            the field at fault.
    """
    if not isinstance(text, str):
        raise CronError(f"a cron expression must be a string, not {type(text).__name__}")
    words = text.split()
    if not words:
        raise CronError(f"invalid cron expression '{text}': it is empty")
    if words[0].startswith("@"):
        expansion = _MACROS.get(words[0].lower()) if len(words) == 1 else None
        if expansion is None:
            known = ", ".join(_MACROS)
            raise CronError(f"invalid cron expression '{text}': unknown macro (use one of {known})")
        return _build(text, "macro", expansion.split(), _STANDARD)
    if len(words) == 5:
        return _build(text, "standard", words, _STANDARD)
    if len(words) in (6, 7):
        return _build(text, "seconds-first", words, _SECONDS_FIRST)
    raise CronError(
        f"invalid cron expression '{text}': it has {len(words)} fields; expected 5 "
        "(minute hour day-of-month month day-of-week), 6 or 7 (second minute hour "
        "day-of-month month day-of-week [year]), or a macro such as @daily"
    )


def _build(text: str, dialect: Dialect, words: list[str], specs: tuple[_Spec, ...]) -> CronSchedule:
    """Parse every field and assemble the schedule (shared by all dialects)."""
    seconds_first = dialect == "seconds-first"
    offset = 0 if seconds_first else 1  # position of each word among the 6 seconds-first slots

    def err(pos: int) -> Callable[[str], CronError]:
        label = specs[pos - 1].label
        return lambda msg: CronError(
            f"invalid cron expression '{text}': field {pos} ({label}) {msg}"
        )

    sets = [
        _parse_field(word, spec, seconds_first, err(pos))
        for pos, (word, spec) in enumerate(zip(words, specs, strict=False), start=1)
    ]
    if seconds_first:
        dows = frozenset(v - 1 for v in sets[5])
        years = None if len(words) == 6 or words[6] == "*" else sets[6]
        seconds = sets[0]
    else:
        dows = frozenset(0 if v == 7 else v for v in sets[4])
        years = None
        seconds = frozenset({0})
        sets.insert(0, seconds)  # align with the seconds-first slots
    dom_word, dow_word = words[3 - offset], words[5 - offset]
    day_or = not seconds_first and not (dom_word[0] in "*?" or dow_word[0] in "*?")
    schedule = CronSchedule(
        text, dialect, seconds, sets[1], sets[2], sets[3], sets[4], dows, years, day_or
    )
    _check_can_fire(schedule, err(4 - offset), 5 - offset, 6 - offset)
    return schedule


def _parse_field(
    raw: str, spec: _Spec, seconds_first: bool, err: Callable[[str], CronError]
) -> frozenset[int]:
    """Read one field: a comma list of values, ranges, '*' or '?', each with an optional step."""
    items = raw.split(",")
    if not all(items):
        raise err(f"'{raw}' has an empty list item")
    if not seconds_first and len(items) > 1 and any(i[0] in "*?" for i in items):
        raise err(f"'{raw}': '*' and '?' cannot be combined with other values in a list")
    top = spec.hi if spec.open_hi is None else spec.open_hi
    values: set[int] = set()
    for item in items:
        upper = item.upper()
        if spec.any_ok and ("#" in item or upper.startswith("L") or upper.endswith(("L", "W"))):
            raise err(f"'{item}': the L, W and # forms are not supported")
        base, has_step, step_text = item.partition("/")
        if base in ("*", "?"):
            if base == "?" and not spec.any_ok:
                raise err("does not accept '?' (only the day of month and day of week fields do)")
            if base == "?" and has_step and not seconds_first:
                raise err(f"'{item}': '?' cannot take a step")
            lo, hi = spec.lo, top
        elif "-" in base:
            first, _, last = base.partition("-")
            if not first or not last:
                raise err(f"range '{base}' is missing an end")
            lo, hi = _value(first, spec, err), _value(last, spec, err)
            if seconds_first and first.isdigit() != last.isdigit():
                raise err(f"range '{base}' mixes a number and a name")
            if lo > hi:
                raise err(f"range '{base}' runs backwards ({lo} is after {hi})")
            if lo == hi and not seconds_first:
                raise err(f"range '{base}' starts and ends at the same value; write just '{first}'")
        else:
            lo = _value(base, spec, err)
            if has_step and seconds_first and not base.isdigit():
                raise err(f"'{item}': a step needs a number, a range or '*' before the '/'")
            hi = top if has_step else lo
        step = 1
        if has_step:
            if not (step_text.isascii() and step_text.isdigit()):
                raise err(f"step '{step_text}' in '{item}' is not a whole number")
            step = int(step_text)
            if step == 0 or (seconds_first and step > spec.hi):
                limit = f"between 1 and {spec.hi}" if seconds_first else "at least 1"
                raise err(f"step {step} in '{item}' must be {limit}")
        values.update(range(lo, hi + 1, step))
    return frozenset(values)


def _value(token: str, spec: _Spec, err: Callable[[str], CronError]) -> int:
    """Read one number or name and check it is in the field's range."""
    if token.isascii() and token.isdigit():
        number = int(token)
    elif token.isascii() and token.isalpha():
        if spec.names is None:
            raise err(f"does not accept names ('{token}')")
        found = spec.names.get(token.lower())
        if found is None:
            raise err(f"has an unknown name '{token}'")
        number = found
    else:
        raise err(f"value '{token}' is not a number" + (" or a name" if spec.names else ""))
    if not spec.lo <= number <= spec.hi:
        raise err(f"value {number} is out of range {spec.lo}-{spec.hi}")
    return number


def _check_can_fire(
    s: CronSchedule, dom_err: Callable[[str], CronError], month_pos: int, dow_pos: int
) -> None:
    """Reject expressions that can never fire, such as the 31st of February."""
    if s.day_or:
        return  # some weekday in the list occurs in every month
    pairs = [(m, d) for m in sorted(s.months) for d in sorted(s.days_of_month) if d <= _MAX_DAYS[m]]
    if not pairs:
        raise dom_err(f"never matches: no month in field {month_pos} (month) has such a day")
    if s.years is None:
        return  # every date, 29 February included, falls on every weekday over the years
    for year in sorted(s.years):
        for month, day in pairs:
            if day <= _days_in_month(year, month) and s._day_ok(day, _dow(year, month, day)):
                return
    raise dom_err(
        f"never matches: no date in the years of field 7 (year) fits the day of month, "
        f"field {month_pos} (month) and field {dow_pos} (day of week) together"
    )


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return 28
    return _MAX_DAYS[month]


def _dow(year: int, month: int, day: int) -> int:
    """Day of the week with 0 = Sunday."""
    return (date(year, month, day).weekday() + 1) % 7


def next_fire_times(
    schedule: CronSchedule, after: datetime, count: int, tz: str | ZoneInfo
) -> list[datetime]:
    """Compute the next fire times of a schedule in a time zone.

    Args:
        schedule: A parsed schedule.
        after: An aware datetime; every result is strictly later than it.
        count: How many fire times to return at most.
        tz: The IANA time zone (name or ZoneInfo) whose wall clock the schedule reads.

    Returns:
        Up to ``count`` aware datetimes in ``tz``, in chronological order; fewer when
        the schedule has no more fire times (a year field in the past, for example).

    Raises:
        ValueError: ``after`` is naive.
        CronError: ``tz`` names no known time zone.
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("next_fire_times needs a timezone-aware 'after' datetime")
    zone = _zone(tz)
    if count <= 0:
        return []
    after_utc = after.astimezone(UTC).replace(tzinfo=None)
    local = after.astimezone(zone)
    # Wall times a little before `after` can still fire after it: skipped times shifted
    # forward (standard) and second occurrences of repeated times (seconds-first).
    here = _offset(local)
    back = max([timedelta(0)] + [here - o for o in _nearby_offsets(after, zone)])
    start = local.replace(tzinfo=None, microsecond=0) - back
    fire_both = schedule.dialect == "seconds-first"
    found: list[datetime] = []
    pending: list[datetime] = []  # heap of naive UTC instants not yet known to be next
    for wall in _wall_times(schedule, start):
        off0 = _offset(wall.replace(tzinfo=zone))
        off1 = _offset(wall.replace(tzinfo=zone, fold=1))
        if off0 == off1:  # an ordinary wall time
            instants = [wall - off0]
        elif off0 > off1:  # repeated (clocks set back): fold 0 is the first occurrence
            instants = [wall - off0, wall - off1] if fire_both else [wall - off0]
        else:  # skipped (clocks set forward): fold 0 is shifted forward by the jump
            instants = [] if fire_both else [wall - off0]
        for instant in instants:
            if instant > after_utc:
                heapq.heappush(pending, instant)
        floor = wall - max(off0, off1)  # no later wall time yields an earlier instant
        while pending and pending[0] <= floor:
            if _emit(found, heapq.heappop(pending)) == count:
                return _localize(found, zone)
    while pending and len(found) < count:
        _emit(found, heapq.heappop(pending))
    return _localize(found, zone)


def _emit(found: list[datetime], instant: datetime) -> int:
    if not found or found[-1] != instant:
        found.append(instant)
    return len(found)


def _localize(instants: list[datetime], zone: tzinfo) -> list[datetime]:
    return [i.replace(tzinfo=UTC).astimezone(zone) for i in instants]


def _zone(tz: str | ZoneInfo) -> tzinfo:
    if not isinstance(tz, str):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone '{tz}'", field="timezone") from None


def _offset(aware: datetime) -> timedelta:
    offset = aware.utcoffset()
    assert offset is not None
    return offset


def _nearby_offsets(instant: datetime, zone: tzinfo) -> Iterator[timedelta]:
    for days in (-2, -1, 1, 2):
        try:
            yield _offset((instant + timedelta(days=days)).astimezone(zone))
        except OverflowError:
            continue


def _wall_times(s: CronSchedule, start: datetime) -> Iterator[datetime]:
    """Yield matching naive wall times from ``start`` on, in order, skipping level by level."""
    hours, minutes, seconds = sorted(s.hours), sorted(s.minutes), sorted(s.seconds)
    first = start.date()
    for day in _days(s, first):
        h0, m0, s0 = (start.hour, start.minute, start.second) if day == first else (0, 0, 0)
        for hour in hours[bisect_left(hours, h0) :]:
            m_from = m0 if hour == h0 else 0
            for minute in minutes[bisect_left(minutes, m_from) :]:
                s_from = s0 if hour == h0 and minute == m0 else 0
                for second in seconds[bisect_left(seconds, s_from) :]:
                    yield datetime(day.year, day.month, day.day, hour, minute, second)


def _days(s: CronSchedule, first: date) -> Iterator[date]:
    """Yield the matching calendar days from ``first`` on, in order."""
    if s.years is None:
        years: Iterator[int] | list[int] = iter(range(first.year, _MAX_YEAR + 1))
    else:
        years = sorted(y for y in s.years if first.year <= y <= _MAX_YEAR)
    months = sorted(s.months)
    for year in years:
        for month in months:
            if (year, month) < (first.year, first.month):
                continue
            start = first.day if (year, month) == (first.year, first.month) else 1
            dow = _dow(year, month, 1) - 1
            for day in range(start, _days_in_month(year, month) + 1):
                if s._day_ok(day, (dow + day) % 7):
                    yield date(year, month, day)


def describe(schedule: CronSchedule) -> str:
    """Return a short English description, such as 'at 09:30 and 17:30 every day'."""
    s = schedule
    secs, mins, hrs = sorted(s.seconds), sorted(s.minutes), sorted(s.hours)
    if len(secs) * len(mins) * len(hrs) <= 4:
        fmt = "{:02}:{:02}" if secs == [0] else "{:02}:{:02}:{:02}"
        times = [fmt.format(h, m, x) for h in hrs for m in mins for x in secs]
        when = "at " + _join(times)
    else:
        parts = [] if secs == [0] else [_every(secs, 0, 59, "second")]
        if secs == [0] or len(mins) < 60:
            parts.append(_every(mins, 0, 59, "minute"))
        if len(hrs) < 24:
            hours = _every(hrs, 0, 23, "hour")
            parts.append(hours.replace("at hour", "during hour"))
        elif parts[-1].startswith("at "):
            parts.append("of every hour")
        when = " ".join(parts)
    days = []
    if len(s.days_of_month) < 31:
        days.append("on day " + _join([str(d) for d in sorted(s.days_of_month)]) + " of the month")
    if len(s.days_of_week) < 7:
        names = [_DAYS_LONG[d].capitalize() for d in sorted(s.days_of_week)]
        days.append("on " + _join(names))
    if days:
        text = f"{when} " + (" or " if s.day_or else " and ").join(days)
    else:
        text = when if len(hrs) == 24 else f"{when} every day"
    if len(s.months) < 12:
        text += " in " + _join([_MONTHS_LONG[m - 1].capitalize() for m in sorted(s.months)])
    if s.years is not None:
        text += " in " + _join([str(y) for y in sorted(s.years)])
    return text


def _every(values: list[int], lo: int, hi: int, unit: str) -> str:
    if len(values) == hi - lo + 1:
        return f"every {unit}"
    step = values[1] - values[0] if len(values) > 1 else 0
    if values[0] == lo and step > 1 and values == list(range(lo, hi + 1, step)):
        return f"every {step} {unit}s"
    return f"at {unit} " + _join([str(v) for v in values])


def _join(items: list[str]) -> str:
    if len(items) > 6:
        items = [*items[:5], "…", items[-1]]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
