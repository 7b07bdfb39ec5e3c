"""Translate svrctl schedules into Prefect schedules that fire at exactly the same instants.

Pure standard library at import time: the CLI calls :func:`check_representable` on
``task add``, and only :meth:`PrefectScheduleSpec.to_prefect` imports Prefect.

The Prefect server computes fire times when its scheduler service creates runs
(``prefect.server.models.deployments._generate_scheduled_flow_runs`` calls the
stored schedule's ``_get_dates_generator``), so "exactly" means: the dates those
server-side schedule classes produce equal ``svrctl.cron.next_fire_times``.

* ``standard`` and ``macro``: a Prefect cron schedule. Their daylight saving time
  rules are defined as Prefect's, so they always translate.
* ``seconds-first`` without a year field: a Prefect cron schedule with the fields
  reordered (croniter puts the seconds last), numbers for names, Sunday = 0 and
  ``day_or=False``. Prefect runs a repeated wall time once and a skipped one late,
  where the seconds-first format runs a repeated time twice and skips a skipped
  one. When a wall time of the expression falls into a daylight saving change of
  the zone in a way that would change the runs, an expression that names no
  hour, day or month (every 5 minutes, hourly) is written as the same schedule in
  UTC, which is exact; any other is refused.
* ``seconds-first`` with a year field: a Prefect RRule schedule, in a zone whose
  UTC offset is always 0 only. croniter's year field cannot end (once the years
  run out croniter raises, and Prefect's scheduler then plans nothing, not even
  the last runs), and Prefect evaluates RRules with dateutil, which reads only the
  transition list of the server's zone files: wrong after 2037, and wrong in every
  year (offset 0) with "slim" files such as those of the tzdata package.

An ``IntervalSchedule`` is never produced: where it would be exact and a cron
schedule would not (a pure step such as every 5 minutes in a zone with daylight
saving time), Prefect's Python < 3.13 server path drops the second pass of a
repeated hour, because it de-duplicates dates that compare equal on the wall clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from svrctl.cron import CronError, CronSchedule, next_fire_times, parse_cron

if TYPE_CHECKING:
    from prefect.client.schemas.schedules import CronSchedule as PrefectCronSchedule
    from prefect.client.schemas.schedules import IntervalSchedule, RRuleSchedule

__all__ = [
    "PrefectScheduleSpec",
    "ScheduleNotRepresentable",
    "check_representable",
    "to_prefect_schedule",
]

ScheduleKind = Literal["cron", "interval", "rrule"]

# How far ahead the daylight saving changes of a zone are examined, for a schedule
# without a year field: at least 29 years (every calendar pattern of day of month
# and day of week recurs within 28 years) and at least to 2101 (zones such as
# Africa/Casablanca list irregular changes decades ahead).
_HORIZON_YEARS = 29
_HORIZON_END = datetime(2101, 1, 2, tzinfo=UTC)
_SCAN_STEP = 86400  # seconds; no zone changes its offset twice within a day
# Prefect refuses longer RRule strings (prefect._internal.schemas.validators).
_MAX_RRULE_LENGTH = 6500
# Prefect's RRule schedule walks every occurrence from DTSTART on each pass of its
# scheduler (dateutil's xafter); about 120,000 per second were measured.
_MAX_RRULE_WALK = 1_000_000
_RRULE_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")


class ScheduleNotRepresentable(CronError):
    """A valid svrctl schedule that no Prefect schedule can reproduce exactly."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="schedule")


@dataclass(frozen=True)
class PrefectScheduleSpec:
    """The Prefect schedule for one task, as plain data (Prefect is imported only to build it).

    Attributes:
        kind: Which Prefect schedule class to build.
        cron: The croniter expression (``kind == "cron"``): minute, hour, day of
            month, month, day of week (Sunday = 0), then the second if not 0.
        day_or: Prefect's ``day_or`` (``kind == "cron"``): True for the OR rule.
        interval_seconds: The interval (``kind == "interval"``; never chosen by
            :func:`to_prefect_schedule`, see the module docstring).
        anchor: An aware anchor instant (``kind == "interval"``).
        rrule: The RRule text with its DTSTART (``kind == "rrule"``).
        timezone: The IANA time zone whose wall clock the schedule reads.
    """

    kind: ScheduleKind
    cron: str | None
    day_or: bool | None
    interval_seconds: float | None
    anchor: datetime | None
    rrule: str | None
    timezone: str

    def __post_init__(self) -> None:
        """Check that the fields of the chosen kind are set."""
        ok = {
            "cron": self.cron is not None and self.day_or is not None,
            "interval": self.interval_seconds is not None and self.anchor is not None,
            "rrule": self.rrule is not None,
        }
        if not ok.get(self.kind, False):
            raise ValueError(f"incomplete {self.kind!r} schedule spec: {self!r}")
        if self.anchor is not None and self.anchor.utcoffset() is None:
            raise ValueError("the anchor of an interval schedule must be timezone-aware")

    def to_prefect(self) -> PrefectCronSchedule | IntervalSchedule | RRuleSchedule:
        """Build the Prefect (client-side) schedule object.

        Returns:
            A ``CronSchedule``, ``IntervalSchedule`` or ``RRuleSchedule`` from
            ``prefect.client.schemas.schedules``.
        """
        from prefect.client.schemas.schedules import CronSchedule as PrefectCronSchedule
        from prefect.client.schemas.schedules import IntervalSchedule, RRuleSchedule

        if self.kind == "cron":
            assert self.cron is not None and self.day_or is not None
            return PrefectCronSchedule(cron=self.cron, timezone=self.timezone, day_or=self.day_or)
        if self.kind == "interval":
            assert self.interval_seconds is not None and self.anchor is not None
            return IntervalSchedule(
                interval=timedelta(seconds=self.interval_seconds),
                anchor_date=self.anchor,
                timezone=self.timezone,
            )
        assert self.rrule is not None
        return RRuleSchedule(rrule=self.rrule, timezone=self.timezone)


def to_prefect_schedule(
    text: str, timezone: str, *, now: datetime | None = None
) -> PrefectScheduleSpec:
    """Translate a schedule into the Prefect schedule that fires at the same instants.

    Args:
        text: A cron expression in any dialect svrctl accepts.
        timezone: The IANA time zone of the task.
        now: The moment from which the fire times must agree (default: the current
            time); daylight saving changes before it do not matter.

    Returns:
        The Prefect schedule, as plain data.

    Raises:
        CronError: The expression or the time zone is invalid.
        ScheduleNotRepresentable: No Prefect schedule fires at exactly the same
            instants; the message says why and what to write instead.
        ValueError: ``now`` is naive.
    """
    schedule = parse_cron(text)
    zone = _load_zone(timezone)
    moment = datetime.now(UTC) if now is None else now
    if moment.utcoffset() is None:
        raise ValueError("to_prefect_schedule needs a timezone-aware 'now'")
    if schedule.dialect != "seconds-first":
        # The standard format and the macros follow Prefect's rules by definition.
        return _cron_spec(schedule, timezone)
    if schedule.years is None:
        problem = _first_difference(schedule, zone, moment, _horizon(moment))
        if problem is None:
            return _cron_spec(schedule, timezone)
        same_in_utc = _utc_equivalent(schedule, zone, moment, _horizon(moment))
        if same_in_utc is not None:
            return _cron_spec(same_in_utc, "UTC")
        raise ScheduleNotRepresentable(_dst_message(schedule, timezone, problem))
    return _rrule_spec(schedule, timezone, zone, moment)


def check_representable(text: str, timezone: str, *, now: datetime | None = None) -> None:
    """Check that a schedule can become an exact Prefect schedule (for ``task add``).

    Args:
        text: A cron expression in any dialect svrctl accepts.
        timezone: The IANA time zone of the task.
        now: The moment from which the fire times must agree (default: now).

    Raises:
        CronError: The expression or the time zone is invalid.
        ScheduleNotRepresentable: No Prefect schedule fires at exactly the same instants.
    """
    to_prefect_schedule(text, timezone, now=now)


# --- cron ---------------------------------------------------------------------------


def _cron_spec(s: CronSchedule, timezone: str) -> PrefectScheduleSpec:
    """Render a schedule as a croniter expression (numbers only, seconds last)."""
    doms, dows, day_or = s.days_of_month, s.days_of_week, s.day_or
    if day_or and (len(doms) == 31 or len(dows) == 7):
        # OR with a field that matches every day: every day. Spell it as two stars,
        # because croniter reads a star in a day field as "no OR".
        doms, dows, day_or = frozenset(range(1, 32)), frozenset(range(7)), False
    fields = [
        _cron_field(s.minutes, 0, 59),
        _cron_field(s.hours, 0, 23),
        _cron_field(doms, 1, 31),
        _cron_field(s.months, 1, 12),
        _cron_field(dows, 0, 6),
    ]
    if s.seconds != {0}:
        fields.append(_cron_field(s.seconds, 0, 59))
    return PrefectScheduleSpec("cron", " ".join(fields), day_or, None, None, None, timezone)


def _utc_equivalent(
    s: CronSchedule, zone: ZoneInfo, now: datetime, end: datetime
) -> CronSchedule | None:
    """Return the same schedule written for UTC, when one exists; else None.

    A schedule that names no hour, day or month (every 5 minutes, every hour)
    fires at every instant whose local minute and second match. The seconds-first
    rule (a repeated wall time fires twice, a skipped one never) is then exactly
    "every matching instant", which a UTC cron expresses, provided the zone's
    offset keeps the same minutes past the hour from now on.
    """
    every_hour = s.hours == frozenset(range(24))
    every_day = (
        s.days_of_month == frozenset(range(1, 32))
        and s.months == frozenset(range(1, 13))
        and s.days_of_week == frozenset(range(7))
    )
    if not (every_hour and every_day):
        return None
    shifts = {int(_offset_at(zone, int(now.timestamp())).total_seconds()) % 3600}
    shifts |= {int(t.after.total_seconds()) % 3600 for t in _transitions(zone, now, end)}
    if len(shifts) != 1 or next(iter(shifts)) % 60:
        return None
    minutes_ahead = next(iter(shifts)) // 60  # local minute = UTC minute + this (mod 60)
    return replace(s, minutes=frozenset((m - minutes_ahead) % 60 for m in s.minutes))


def _cron_field(values: frozenset[int], lo: int, hi: int) -> str:
    """Write a set of values as '*', 'a-b/step' or a list of numbers and 'a-b' runs.

    Only forms croniter reads literally: no names, no 'a-a' (croniter reads that as
    the whole range) and no range that runs backwards (croniter wraps it around).
    """
    ordered = sorted(values)
    if len(ordered) == hi - lo + 1:
        return "*"
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], ordered[-1] + 1, step)):
            if ordered[0] == lo and ordered[-1] + step > hi:
                return f"*/{step}"
            return f"{ordered[0]}-{ordered[-1]}/{step}"
    parts: list[str] = []
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            first, last = ordered[start], ordered[i - 1]
            if last - first >= 2:
                parts.append(f"{first}-{last}")
            else:
                parts.extend(str(v) for v in range(first, last + 1))
            start = i
    return ",".join(parts)


def _five_field(s: CronSchedule) -> str | None:
    """Return the standard 5-field expression with the same fields, if there is one."""
    if s.seconds != {0} or s.years is not None:
        return None
    if len(s.days_of_month) < 31 and len(s.days_of_week) < 7:
        return None  # both day fields restricted: 5-field cron would OR them
    spec = _cron_spec(s, "UTC")
    return spec.cron


# --- rrule (seconds-first with a year field) -----------------------------------------


def _rrule_spec(
    s: CronSchedule, timezone: str, zone: ZoneInfo, now: datetime
) -> PrefectScheduleSpec:
    """Render a year-limited schedule as an RRule set, after checking it is exact."""
    assert s.years is not None
    this_year = now.astimezone(zone).year
    if not next_fire_times(s, now, 1, zone):
        # Already over: an RRule that ends before it starts never fires, and costs nothing.
        text = _rrule_text(s, max(s.years) + 1, [(1, max(s.years))])
        return PrefectScheduleSpec("rrule", None, None, None, None, text, timezone)
    years = sorted(y for y in s.years if y >= this_year)
    first = years[0]
    if not _always_utc(zone, now, datetime(years[-1] + 1, 1, 2, tzinfo=UTC)):
        raise ScheduleNotRepresentable(
            f"schedule '{s.text}' has a year field, so Prefect would need an RRule "
            "schedule for it (a Prefect cron schedule cannot stop after its last year), "
            f"and Prefect computes RRule times with dateutil, which does not know the "
            f"rules of {timezone}: it reads only the list of changes stored in the "
            "server's time zone files, so its times are wrong after 2037, or in every "
            "year when those files are compiled 'slim' (as in the tzdata package). To "
            "fix it, use the UTC time zone, or drop the year field and remove the task "
            "after its last run"
        )
    lines = _year_progressions(years)
    text = _rrule_text(s, first, lines)
    if len(text) > _MAX_RRULE_LENGTH:
        raise ScheduleNotRepresentable(
            f"schedule '{s.text}' needs a Prefect RRule schedule (it has a year field), "
            f"and its RRule would be {len(text)} characters long, more than the "
            f"{_MAX_RRULE_LENGTH} Prefect accepts: list the years as one range or one "
            "step (such as 2027-2030 or 2027-2035/2), or split the task in several"
        )
    walk = _rrule_walk(s, first, lines)
    if walk > _MAX_RRULE_WALK:
        raise ScheduleNotRepresentable(
            f"schedule '{s.text}' needs a Prefect RRule schedule (it has a year field), "
            f"and it would fire {walk:,} times from the start of {first} on; Prefect's "
            "scheduler walks through all of them from the start each time it plans "
            "runs, which takes several seconds per pass. Let it fire less often or in "
            "fewer years, or drop the year field and remove the task after its last run"
        )
    return PrefectScheduleSpec("rrule", None, None, None, None, text, timezone)


def _always_utc(zone: ZoneInfo, now: datetime, end: datetime) -> bool:
    """Tell whether a zone's UTC offset is 0 from ``now`` to ``end``."""
    if _offset_at(zone, int(now.timestamp())):
        return False
    return next(_transitions(zone, now, end), None) is None


def _year_progressions(years: list[int]) -> list[tuple[int, int]]:
    """Cover a sorted set of years with (interval, last year) progressions from its first.

    Every RRULE of an RRule set shares the DTSTART, so each covers ``first``,
    ``first + interval``, ... up to its last year; together they cover exactly ``years``.
    """
    first, wanted = years[0], set(years)
    covered = {first}
    lines: list[tuple[int, int]] = []
    for year in years[1:]:
        if year in covered:
            continue
        step, last = year - first, year
        while last + step in wanted:
            last += step
        covered.update(range(first, last + 1, step))
        lines.append((step, last))
    return lines or [(1, first)]


def _rrule_text(s: CronSchedule, first: int, lines: list[tuple[int, int]]) -> str:
    """Write the RRule set: one DTSTART (wall clock, 1 January of ``first``), one RRULE a line."""
    parts = []
    if len(s.months) < 12:
        parts.append("BYMONTH=" + _numbers(s.months))
    if len(s.days_of_month) < 31:
        parts.append("BYMONTHDAY=" + _numbers(s.days_of_month))
    if len(s.days_of_week) < 7 or len(s.days_of_month) == 31:
        # dateutil needs one day rule, else it takes the day of DTSTART.
        parts.append("BYDAY=" + ",".join(_RRULE_DAYS[d] for d in sorted(s.days_of_week)))
    parts.append("BYHOUR=" + _numbers(s.hours))
    parts.append("BYMINUTE=" + _numbers(s.minutes))
    parts.append("BYSECOND=" + _numbers(s.seconds))
    body = ";".join(parts)
    rules = [
        f"RRULE:FREQ=YEARLY;INTERVAL={step};{body};UNTIL={last:04}1231T235959"
        for step, last in lines
    ]
    return "\n".join([f"DTSTART:{first:04}0101T000000", *rules])


def _numbers(values: frozenset[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def _rrule_walk(s: CronSchedule, first: int, lines: list[tuple[int, int]]) -> int:
    """Count the occurrences Prefect walks through once the schedule is over."""
    per_day = len(s.seconds) * len(s.minutes) * len(s.hours)
    years = [y for step, last in lines for y in range(first, last + 1, step)]
    if per_day * 366 * len(years) <= _MAX_RRULE_WALK:
        return per_day * 366 * len(years)  # an upper bound is enough, and cheap
    return per_day * sum(_days_in_year(s, y) for y in years)


def _days_in_year(s: CronSchedule, year: int) -> int:
    day, end, count = date(year, 1, 1), date(year + 1, 1, 1), 0
    while day < end:
        count += s.day_matches(day)
        day += timedelta(days=1)
    return count


# --- daylight saving time -----------------------------------------------------------


@dataclass(frozen=True)
class _Transition:
    """A change of a zone's UTC offset."""

    at: datetime  # naive UTC instant from which ``after`` applies
    before: timedelta
    after: timedelta

    @property
    def jump(self) -> timedelta:
        """Return how far the wall clock moves: positive forward (a gap), negative back."""
        return self.after - self.before

    @property
    def window(self) -> tuple[datetime, datetime]:
        """Return the naive local wall times [lo, hi) skipped (gap) or repeated (fold)."""
        return self.at + min(self.before, self.after), self.at + max(self.before, self.after)


@dataclass(frozen=True)
class _Difference:
    """A wall time at which svrctl and Prefect would fire differently."""

    transition: _Transition
    wall: datetime  # naive local wall time in the window
    prefect_wall: datetime | None  # where Prefect runs a skipped time (None for a fold)


def _load_zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise CronError(f"unknown time zone '{timezone}'", field="timezone") from None


def _horizon(now: datetime) -> datetime:
    return max(now.astimezone(UTC) + timedelta(days=366 * _HORIZON_YEARS), _HORIZON_END)


def _offset_at(zone: ZoneInfo, timestamp: int) -> timedelta:
    offset = datetime.fromtimestamp(timestamp, zone).utcoffset()
    assert offset is not None
    return offset


def _transitions(zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[_Transition]:
    """Yield the offset changes of a zone between two instants, in order.

    A change is yielded when its first second at the new offset is after ``start``
    and not after ``end``. The changes of whole UTC years are scanned once per zone
    and process (:func:`_year_transitions`): a sync translates many schedules in the
    same few zones, and each scan takes ~20 ms.
    """
    t, end_ts = int(start.timestamp()), int(end.timestamp())
    first_year = datetime.fromtimestamp(t, UTC).year
    last_year = datetime.fromtimestamp(end_ts, UTC).year
    if zone.key is None or end_ts <= t or last_year >= MAXYEAR:
        yield from _scan_transitions(zone, t, end_ts)
        return
    stamps, found = _year_transitions(zone.key, first_year, last_year)
    # The changes in (t, end_ts]: what a scan from t to end_ts finds.
    yield from found[bisect_right(stamps, t) : bisect_right(stamps, end_ts)]


@lru_cache(maxsize=64)
def _year_transitions(
    key: str, first_year: int, last_year: int
) -> tuple[tuple[int, ...], tuple[_Transition, ...]]:
    """Return the offset changes of a zone from 1 January of one year to the end of another.

    Returns:
        The UTC timestamps of the changes (for bisecting) and the changes, in order.
    """
    start = int(datetime(first_year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(last_year + 1, 1, 1, tzinfo=UTC).timestamp())
    found = tuple(_scan_transitions(ZoneInfo(key), start, end))
    return tuple(int(tr.at.replace(tzinfo=UTC).timestamp()) for tr in found), found


def _scan_transitions(zone: ZoneInfo, t: int, end_ts: int) -> Iterator[_Transition]:
    """Yield the offset changes of a zone in (t, end_ts], scanning a day at a time."""
    off = _offset_at(zone, t)
    while t < end_ts:
        t_next = min(t + _SCAN_STEP, end_ts)
        off_next = _offset_at(zone, t_next)
        if off_next != off:
            lo, hi = t, t_next  # the offset is `off` at lo and `off_next` at hi
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if _offset_at(zone, mid) == off else (lo, mid)
            at = datetime.fromtimestamp(hi, UTC).replace(tzinfo=None)
            yield _Transition(at, off, off_next)
        t, off = t_next, off_next


def _first_difference(
    s: CronSchedule, zone: ZoneInfo, now: datetime, end: datetime
) -> _Difference | None:
    """Find the first daylight saving change at which a Prefect cron schedule differs.

    The seconds-first format fires at both passes of a repeated wall time and never
    at a skipped one. Prefect's cron schedule fires once at a repeated wall time (the
    first pass), so any wall time in a fold differs; and it fires a skipped wall time
    shifted later by the jump, which differs unless the shifted wall time is itself
    one of the schedule's times (Prefect then fires there once, as svrctl does).

    Args:
        s: A seconds-first schedule.
        zone: Its time zone.
        now: Changes whose effects end before this instant do not matter.
        end: Changes from this instant on are not examined.
    """
    now_utc = now.astimezone(UTC).replace(tzinfo=None)
    start = now.astimezone(UTC) - timedelta(days=2)  # a change can still matter after `now`
    memo: dict[tuple[object, ...], timedelta | None] = {}
    for tr in _transitions(zone, start, end):
        lo, hi = tr.window
        if tr.at + abs(tr.jump) <= now_utc:
            continue  # every instant it affects is before `now`
        reach = abs(tr.jump)
        days = _dates(lo - reach, hi + reach)
        # The answer depends only on the window's wall times and on which days match.
        key = (lo.time(), hi - lo, tr.jump, tuple(s.day_matches(d) for d in days))
        if key not in memo:
            memo[key] = _window_difference(s, tr)
        found = memo[key]
        if found is not None:
            wall = lo + found
            return _Difference(tr, wall, None if tr.jump < timedelta(0) else wall + tr.jump)
    return None


def _window_difference(s: CronSchedule, tr: _Transition) -> timedelta | None:
    """Return the position in the window of the first wall time that fires differently."""
    lo, hi = tr.window
    for wall in _walls_between(s, lo, hi):
        if tr.jump < timedelta(0) or not s.matches(wall + tr.jump):
            return wall - lo
    return None


def _dates(lo: datetime, hi: datetime) -> list[date]:
    days, day = [], lo.date()
    while day <= hi.date():
        days.append(day)
        day += timedelta(days=1)
    return days


def _walls_between(s: CronSchedule, lo: datetime, hi: datetime) -> Iterator[datetime]:
    """Yield the schedule's naive wall times in [lo, hi), in order."""
    hours, minutes, seconds = sorted(s.hours), sorted(s.minutes), sorted(s.seconds)
    for day in _dates(lo, hi):
        if not s.day_matches(day):
            continue
        midnight = datetime.combine(day, time())
        for hour in hours:
            at_hour = midnight + timedelta(hours=hour)
            if at_hour >= hi:
                return
            if at_hour + timedelta(hours=1) <= lo:
                continue
            for minute in minutes:
                at_minute = at_hour + timedelta(minutes=minute)
                if at_minute >= hi:
                    return
                if at_minute + timedelta(minutes=1) <= lo:
                    continue
                for second in seconds:
                    wall = at_minute + timedelta(seconds=second)
                    if wall >= hi:
                        return
                    if wall >= lo:
                        yield wall


def _dst_message(s: CronSchedule, timezone: str, diff: _Difference) -> str:
    """Explain a refusal caused by a daylight saving change, and what to write instead."""
    tr = diff.transition
    lo, hi = tr.window
    when = lo.date().isoformat()
    if diff.prefect_wall is None:
        why = (
            f"on {when} the clocks go back from {_hm(hi)} to {_hm(lo)}, so {_hm(diff.wall)} "
            f"happens twice; the seconds-first format runs at both, a Prefect cron "
            "schedule only at the first"
        )
    else:
        why = (
            f"on {when} the clocks jump from {_hm(lo)} to {_hm(hi)}, so {_hm(diff.wall)} "
            f"does not exist; the seconds-first format skips it, a Prefect cron "
            f"schedule would run at {_hm(diff.prefect_wall)} instead"
        )
    fixes = [
        "use the UTC time zone (or another without daylight saving time)",
        f"keep every run out of {_hm(lo)}-{_hm(hi)}",
    ]
    five = _five_field(s)
    if five is not None:
        fixes.append(
            f"write it as the 5-field expression '{five}', which runs a skipped time "
            "late and a repeated time once"
        )
    return (
        f"schedule '{s.text}' cannot run in {timezone} under Prefect exactly as svrctl "
        f"runs it: {why}. To fix it, " + ", or ".join(fixes)
    )


def _hm(wall: datetime) -> str:
    return f"{wall:%H:%M}" if wall.second == 0 else f"{wall:%H:%M:%S}"
