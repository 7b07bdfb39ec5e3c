"""The text of notices: one run's notice, and the daily or weekly summary.

Bodies are markdown. Everything that comes from a run (output, error) goes into a
fenced block whose fence is longer than any run of backticks or tildes in it, so no
output can close the block, inject links or formatting, or break the message; the
output tail is capped (lines and characters) and stripped of terminal escapes and
control characters. Short values that sit inline (names, statuses) are escaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from svrctl.notify import Event, Notice
from svrctl.notify.policy import Decision

__all__ = [
    "ERROR_CHARS",
    "TAIL_CHARS",
    "TAIL_LINES",
    "FailingTask",
    "MissedRun",
    "NextRun",
    "RunDetails",
    "SlowTask",
    "Summary",
    "TaskCounts",
    "clean",
    "fenced",
    "human_duration",
    "inline",
    "percent",
    "plural",
    "run_notice",
    "summary_notice",
    "summary_text",
    "tail",
]

# How much of a run's output a notice quotes: its last lines, at most this many characters.
TAIL_LINES = 20
TAIL_CHARS = 1500
# How much of a run's error a notice quotes.
ERROR_CHARS = 800
# How many lines each part of a summary lists at most.
SUMMARY_TASKS = 30
SUMMARY_SLOWEST = 5
SUMMARY_MISSED = 10
SUMMARY_NEXT = 10

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_INLINE_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+!|~])")

_STATUS_WORDS = {
    "failed": "failed",
    "timed_out": "timed out",
    "crashed": "crashed",
    "success": "succeeded",
    "missed": "missed a run",
    "skipped": "was skipped",
    "cancelled": "was cancelled",
}


# ----------------------------------------------------------------------------- text helpers


def clean(text: str) -> str:
    """Drop terminal escape sequences and control characters (keeping newlines and tabs)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", _ANSI.sub("", text))


def tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> tuple[str, bool]:
    """Return the last ``lines`` lines of ``text``, at most ``chars`` long, and if it was cut."""
    text = clean(text).rstrip("\n")
    kept = text.split("\n")[-lines:] if text else []
    out = "\n".join(kept)
    cut = len(kept) < len(text.split("\n")) if text else False
    if len(out) > chars:
        out = out[-chars:]
        # start at a line boundary when one is near, else mark the cut
        newline = out.find("\n")
        out = out[newline + 1 :] if 0 <= newline < 200 else "…" + out[1:]
        cut = True
    return out, cut


def fenced(text: str) -> str:
    """Return ``text`` as a fenced code block that nothing inside it can close."""
    longest = max((len(m) for m in re.findall(r"`+|~+", text)), default=0)
    fence = "~" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def inline(text: str) -> str:
    """Escape a short value for inline markdown: one line, markdown characters escaped."""
    one_line = " ".join(clean(text).split())
    return _INLINE_SPECIAL.sub(r"\\\1", one_line)


def human_duration(value: timedelta | int | float | None) -> str:
    """Return a duration (a timedelta, or milliseconds) as people read it: 850 ms, 2 h 5 min."""
    if value is None:
        return "-"
    ms = value.total_seconds() * 1000 if isinstance(value, timedelta) else float(value)
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def percent(part: int, whole: int) -> str:
    """Return ``part/whole`` as a percentage with at most one decimal (``-`` when whole is 0)."""
    if whole <= 0:
        return "-"
    value = round(100 * part / whole, 1)
    return f"{value:g}%"


def plural(count: int, word: str) -> str:
    """Return ``1 run``, ``2 runs``: a count and its noun."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _when(at: datetime | None, tz: tzinfo) -> str:
    if at is None:
        return "-"
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def _first_line(text: str | None) -> str:
    return next((line.strip() for line in clean(text or "").splitlines() if line.strip()), "")


# ----------------------------------------------------------------------------- one run


@dataclass
class RunDetails:
    """What a run notice says about the run.

    Attributes:
        task_id: The task's id.
        task_name: The task's name.
        server: Where it ran: a server, several (``a, b``), or the local host.
        status: The run's final status.
        finished_at: When it finished.
        duration_ms: How long it took.
        exit_code: Its exit code, when it had one.
        error: Its error text.
        output: Its output (the notice quotes the tail).
        flow_run_id: Its Prefect flow run.
        run_url: Link to the flow run in Prefect's UI (delivery adds it to the message).
    """

    task_id: int
    task_name: str
    server: str
    status: str
    finished_at: datetime
    duration_ms: int | None = None
    exit_code: int | None = None
    error: str | None = None
    output: str = ""
    flow_run_id: str | None = None
    run_url: str | None = None


def _title(run: RunDetails, decision: Decision, tz: tzinfo) -> str:
    name = " ".join(run.task_name.split())
    where = f" on {' '.join(run.server.split())}" if run.server else ""
    words = _STATUS_WORDS.get(run.status, run.status)
    event = decision.event
    if event is Event.FAILURE:
        count = decision.streak.count
        streak = f" ({count} runs in a row)" if count > 1 else ""
        return f"✗ {name} {words}{where}{streak}"
    if event is Event.STILL_FAILING:
        since = _when(decision.streak.failing_since, tz)
        return f"✗ {name} still failing ({decision.streak.count} runs since {since})"
    if event is Event.RECOVERY:
        return f"✓ {name} recovered after {human_duration(decision.downtime)}"
    if event is Event.SUCCESS:
        return f"✓ {name} succeeded{where}"
    if event is Event.MISSED:
        return f"⚠ {name} missed a run"
    found = _first_line(run.output) or words
    return f"{name}: {' '.join(found.split())[:120]}"


def run_notice(run: RunDetails, decision: Decision, tz: tzinfo = UTC) -> Notice:
    """Return the notice of ``decision`` (which must have an event) about ``run``."""
    assert decision.event is not None
    code = f" (exit code {run.exit_code})" if run.exit_code is not None else ""
    lines = [
        f"**Task:** {inline(run.task_name)}",
        f"**Server:** {inline(run.server or '-')}",
        f"**Status:** {inline(run.status)}{code}",
        f"**Duration:** {human_duration(run.duration_ms)}",
        f"**Finished:** {_when(run.finished_at, tz)}",
    ]
    before = decision.previous
    if decision.event in (Event.FAILURE, Event.STILL_FAILING):
        since = _when(decision.streak.failing_since, tz)
        count = plural(decision.streak.count, "failed run")
        lines.append(f"**Failing since:** {since} ({count} in a row)")
    elif decision.event is Event.RECOVERY:
        lines.append(
            f"**Down for:** {human_duration(decision.downtime)} "
            f"({plural(before.count, 'failed run')} since {_when(before.failing_since, tz)})"
        )
    if run.error:
        error = clean(run.error).strip("\n")
        if len(error) > ERROR_CHARS:
            error = error[: ERROR_CHARS - 1] + "…"
        lines += ["", "**Error:**", fenced(error)]
    if run.output.strip():
        text, cut = tail(run.output)
        label = f"last {TAIL_LINES} lines" if cut else "all of it"
        lines += ["", f"**Output** ({label}):", fenced(text)]
    # the "View run" link (run_url) is added by each channel's delivery, as it fits
    return Notice(
        event=decision.event,
        title=_title(run, decision, tz),
        body="\n".join(lines),
        priority=decision.priority,
        task_id=run.task_id,
        task_name=run.task_name,
        status=run.status,
        flow_run_id=run.flow_run_id,
        run_url=run.run_url,
    )


# ----------------------------------------------------------------------------- summaries


@dataclass
class TaskCounts:
    """One task's runs in a summary's period (a run is one flow run, whatever its attempts)."""

    name: str
    runs: int = 0
    successes: int = 0
    failures: int = 0
    missed: int = 0
    skipped: int = 0
    cancelled: int = 0

    @property
    def success_rate(self) -> str:
        """Successes among the runs that succeeded or failed (skipped, missed: not counted)."""
        return percent(self.successes, self.successes + self.failures)


@dataclass
class FailingTask:
    """A task whose latest runs fail."""

    name: str
    since: datetime | None
    streak: int
    last_status: str | None
    error: str | None = None


@dataclass
class SlowTask:
    """A task's longest and average step duration in the period."""

    name: str
    longest_ms: int
    average_ms: int
    runs: int


@dataclass
class MissedRun:
    """A run recorded ``missed``."""

    name: str
    at: datetime
    reason: str | None


@dataclass
class NextRun:
    """A task's next scheduled run."""

    name: str
    at: datetime


@dataclass
class Summary:
    """What a summary says about its period."""

    label: str
    start: datetime
    end: datetime
    tasks: list[TaskCounts] = field(default_factory=list)
    failing: list[FailingTask] = field(default_factory=list)
    slowest: list[SlowTask] = field(default_factory=list)
    missed: list[MissedRun] = field(default_factory=list)
    upcoming: list[NextRun] = field(default_factory=list)

    @property
    def runs(self) -> int:
        """All runs in the period."""
        return sum(t.runs for t in self.tasks)

    @property
    def failures(self) -> int:
        """Failed runs in the period."""
        return sum(t.failures for t in self.tasks)

    @property
    def successes(self) -> int:
        """Successful runs in the period."""
        return sum(t.successes for t in self.tasks)


def _more(lines: list[str], total: int, shown: int) -> list[str]:
    return lines + ([f"- … and {total - shown} more"] if total > shown else [])


def summary_text(summary: Summary, tz: tzinfo = UTC) -> tuple[str, str]:
    """Return the title and markdown body of ``summary``."""
    rate = percent(summary.successes, summary.successes + summary.failures)
    headline = (
        f"{plural(summary.runs, 'run')}, {plural(summary.failures, 'failure')}, {rate} success"
    )
    title = f"svrctl {summary.label} summary: {headline}"
    body = [
        f"## svrctl {inline(summary.label)} summary",
        f"{_when(summary.start, tz)} to {_when(summary.end, tz)}",
        "",
        f"**{headline}** ({plural(len(summary.tasks), 'task')} ran)",
        "",
        "### Runs per task",
    ]
    ranked = sorted(summary.tasks, key=lambda t: (-t.failures, -t.runs, t.name))
    shown = ranked[:SUMMARY_TASKS]
    per_task = []
    for t in shown:
        others = ((t.missed, "missed"), (t.skipped, "skipped"), (t.cancelled, "cancelled"))
        extra = "".join(f", {n} {word}" for n, word in others if n)
        per_task.append(
            f"- {inline(t.name)}: {plural(t.runs, 'run')}, {plural(t.failures, 'failure')}, "
            f"{t.success_rate} success{extra}"
        )
    body += _more(per_task, len(ranked), len(shown)) or ["- no runs"]

    body += ["", "### Failing now"]
    failing = []
    for f in summary.failing:
        line = f"- {inline(f.name)}: {plural(f.streak, 'failed run')} in a row"
        line += f" since {_when(f.since, tz)}" if f.since else ""
        line += f", last {inline(f.last_status or '-')}"
        error = _first_line(f.error)
        failing.append(line + (f": {inline(error)[:200]}" if error else ""))
    body += failing or ["- none"]

    body += ["", "### Slowest tasks"]
    slow = [
        f"- {inline(s.name)}: longest {human_duration(s.longest_ms)}, "
        f"average {human_duration(s.average_ms)} ({plural(s.runs, 'run')})"
        for s in summary.slowest[:SUMMARY_SLOWEST]
    ]
    body += slow or ["- no runs"]

    body += ["", "### Missed runs"]
    missed = [
        f"- {inline(m.name)} at {_when(m.at, tz)}"
        + (f": {inline(_first_line(m.reason))[:200]}" if _first_line(m.reason) else "")
        for m in summary.missed[:SUMMARY_MISSED]
    ]
    body += _more(missed, len(summary.missed), len(missed)) or ["- none"]

    body += ["", "### Next runs"]
    upcoming = [f"- {inline(n.name)}: {_when(n.at, tz)}" for n in summary.upcoming[:SUMMARY_NEXT]]
    body += upcoming or ["- none scheduled"]
    return title, "\n".join(body)


def summary_notice(summary: Summary, tz: tzinfo = UTC) -> Notice:
    """Return the notice of ``summary``: low priority, higher when something fails."""
    title, body = summary_text(summary, tz)
    trouble = summary.failures or summary.failing or summary.missed
    return Notice(event=Event.SUMMARY, title=title, body=body, priority=5 if trouble else 3)
