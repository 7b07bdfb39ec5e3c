"""Views of the fleet, of history, of failures and of metrics, as markdown for Prefect's UI.

Each view has a stable artifact key, so Prefect's Artifacts page keeps one entry per
view and shows its latest version (older versions stay in the key's timeline). The
``run-task`` flow refreshes the views a run changes; the ``refresh-views`` flow
refreshes all of them on a schedule. Builders here only read the app database and
return text: publishing is the flows' job.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from svrctl.db.models import MetricRow, RunStatus, Server, Task, TaskHistory, utcnow

__all__ = [
    "HISTORY_LIMIT",
    "View",
    "all_views",
    "artifact_slug",
    "failures_view",
    "fleet_view",
    "metrics_view",
    "sparkline",
    "task_history_view",
    "views_after_run",
]

HISTORY_LIMIT = 50
TREND_POINTS = 20
_BARS = "▁▂▃▄▅▆▇█"
_FAILED = {s.value for s in RunStatus if s.counts_as_failure}

# Returns the Prefect UI address of a flow run (None when it cannot be told).
RunLink = Callable[[str | None], str | None]


@dataclass(frozen=True)
class View:
    """One view: its artifact key, a one-line description and its markdown."""

    key: str
    description: str
    markdown: str


def artifact_slug(name: str) -> str:
    """Return ``name`` as an artifact key part: lowercase letters, digits and dashes."""
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower())
    return "-".join(part for part in slug.split("-") if part) or "x"


def sparkline(values: Iterable[float]) -> str:
    """Return a one-line bar chart of ``values`` (flat when they are all equal)."""
    points = list(values)
    if not points:
        return ""
    low, high = min(points), max(points)
    if high == low:
        return _BARS[0] * len(points)
    scale = (len(_BARS) - 1) / (high - low)
    return "".join(_BARS[round((v - low) * scale)] for v in points)


def _cell(text: object) -> str:
    """Return ``text`` safe for one markdown table cell."""
    if text is None:
        return "-"
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ") or "-"


def _when(value: datetime | None) -> str:
    """Return a UTC time for a table cell."""
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"


def _run(link: RunLink, flow_run_id: str | None, text: str) -> str:
    """Return ``text`` linked to its flow run when the run and the UI are known."""
    url = link(flow_run_id)
    return f"[{_cell(text)}]({url})" if url else _cell(text)


def _short(text: str | None, limit: int = 120) -> str:
    """Return the first line of ``text``, cut to ``limit`` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def task_history_view(session: Session, task: Task, link: RunLink) -> View:
    """Return the latest runs of one task, newest first, each linked to its flow run."""
    rows = list(
        session.scalars(
            select(TaskHistory)
            .where(TaskHistory.task_id == task.id)
            .order_by(TaskHistory.started_at.desc(), TaskHistory.id.desc())
            .limit(HISTORY_LIMIT)
        )
    )
    lines = [
        f"### History of {_cell(task.name)}",
        "",
        f"{task.run_count} runs, {task.success_count} succeeded, {task.failure_count} failed; "
        f"the latest {len(rows)} attempts (UTC):",
        "",
        "| started | status | server | attempt | by | duration | exit | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        duration = f"{r.duration_ms} ms" if r.duration_ms is not None else "-"
        lines.append(
            f"| {_run(link, r.flow_run_id, _when(r.started_at))} | {r.status} "
            f"| {_cell(r.server_name)} | {r.attempt} | {r.triggered_by} | {duration} "
            f"| {_cell(r.exit_code)} | {_cell(_short(r.error))} |"
        )
    if not rows:
        lines.append("| - | no runs yet | | | | | | |")
    return View(
        key=f"task-{artifact_slug(task.name)}-history",
        description=f"Latest {HISTORY_LIMIT} runs of {task.name}",
        markdown="\n".join(lines),
    )


def _latest_by_server(session: Session, task: Task, width: int) -> dict[str, TaskHistory]:
    """Return the latest finished attempt of ``task`` on each server it ran on."""
    latest: dict[str, TaskHistory] = {}
    rows = session.scalars(
        select(TaskHistory)
        .where(TaskHistory.task_id == task.id, TaskHistory.status != RunStatus.RUNNING.value)
        .order_by(TaskHistory.started_at.desc(), TaskHistory.id.desc())
        .limit(max(HISTORY_LIMIT, 4 * width))
    )
    for r in rows:
        latest.setdefault(r.server_name or "local", r)
    return latest


def fleet_view(session: Session, link: RunLink) -> View:
    """Return every server with last seen, OS, each task's last result and the next run."""
    servers = list(session.scalars(select(Server).order_by(Server.name)))
    tasks = list(session.scalars(select(Task).order_by(Task.name)))
    seen = dict(
        session.execute(
            select(TaskHistory.server_name, func.max(TaskHistory.finished_at))
            .where(TaskHistory.exit_code.is_not(None))
            .group_by(TaskHistory.server_name)
        ).all()
    )
    by_server: dict[str, list[str]] = defaultdict(list)
    next_run: dict[str, datetime] = {}
    for task in tasks:
        names = [s.name for s in servers if s.id == task.server_id or task.server_tag in s.tags]
        if task.server_id is None and task.server_tag is None:
            names = ["local"]
        for name, row in _latest_by_server(session, task, len(names)).items():
            mark = {"success": "✓", "skipped": "–"}.get(row.status, "✗")
            by_server[name].append(
                f"{_cell(task.name)}: {_run(link, row.flow_run_id, f'{mark} {row.status}')}"
            )
        if task.enabled and task.next_run_at:
            for name in names:
                if name not in next_run or task.next_run_at < next_run[name]:
                    next_run[name] = task.next_run_at
    lines = [
        "### Fleet",
        "",
        f"{len(servers)} servers, {len(tasks)} tasks (times in UTC).",
        "",
        "| server | address | enabled | last seen | OS | last result per task | next run |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[str, str, bool, Server | None]] = [
        (s.name, f"{s.username}@{s.host}:{s.port}", s.enabled, s) for s in servers
    ]
    if "local" in by_server:
        rows.append(("local", "the worker's host", True, None))
    for name, address, enabled, server in rows:
        last = max(
            (t for t in (server.last_seen if server else None, seen.get(name)) if t),
            default=None,
        )
        system = " ".join(p for p in (server.os_type, server.os_version) if p) if server else ""
        lines.append(
            f"| {_cell(name)} | {_cell(address)} | {'yes' if enabled else 'no'} | {_when(last)} "
            f"| {_cell(system)} | {'<br>'.join(by_server.get(name, [])) or '-'} "
            f"| {_when(next_run.get(name))} |"
        )
    return View(
        key="fleet",
        description="Servers, their last results and next runs",
        markdown="\n".join(lines),
    )


def failures_view(session: Session, link: RunLink) -> View:
    """Return the tasks failing now, with since when, the streak and the last error."""
    failing = list(
        session.scalars(
            select(Task)
            .where(Task.last_status.in_(sorted(_FAILED)))
            .order_by(Task.failing_since, Task.name)
        )
    )
    now = utcnow()
    lines = ["### Failing now", ""]
    if not failing:
        lines.append(f"No task is failing ({_when(now)} UTC).")
    else:
        lines += [
            "| task | status | failing since | runs in a row | last run | last error |",
            "|---|---|---|---|---|---|",
        ]
    for task in failing:
        last = session.scalars(
            select(TaskHistory)
            .where(TaskHistory.task_id == task.id, TaskHistory.status.in_(sorted(_FAILED)))
            .order_by(TaskHistory.started_at.desc(), TaskHistory.id.desc())
            .limit(1)
        ).first()
        since = task.failing_since or (last.started_at if last else None)
        error = _short(last.error if last else None) or (
            f"exit code {last.exit_code}" if last and last.exit_code is not None else ""
        )
        lines.append(
            f"| {_cell(task.name)} | {task.last_status} | {_when(since)} "
            f"| {max(task.failure_streak, 1)} "
            f"| {_run(link, last.flow_run_id if last else None, _when(task.last_run_at))} "
            f"| {_cell(error)} |"
        )
    return View(key="failures", description="Tasks failing now", markdown="\n".join(lines))


def metrics_view(session: Session, server: str, link: RunLink) -> View:
    """Return a server's latest figures, each with its recent trend as a sparkline."""
    rows = list(
        session.scalars(
            select(MetricRow)
            .where(MetricRow.server == server)
            .order_by(MetricRow.time.desc(), MetricRow.id.desc())
            .limit(2000)
        )
    )
    series: dict[tuple[str, str], list[MetricRow]] = defaultdict(list)
    for row in rows:
        labels = ", ".join(f"{k}={v}" for k, v in sorted((row.labels or {}).items()))
        points = series[(row.name, labels)]
        if len(points) < TREND_POINTS:
            points.append(row)
    lines = [f"### Metrics of {_cell(server)}", ""]
    if not series:
        lines.append("No figures recorded yet.")
    else:
        lines += [
            f"Latest value of each figure, and its last {TREND_POINTS} values (oldest left).",
            "",
            "| metric | labels | latest | unit | trend | min | max | at |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for (name, labels), points in sorted(series.items()):
        values = [p.value for p in reversed(points)]
        latest = points[0]
        lines.append(
            f"| {_cell(name)} | {_cell(labels)} | {latest.value:g} | {_cell(latest.unit)} "
            f"| {sparkline(values)} | {min(values):g} | {max(values):g} "
            f"| {_run(link, latest.flow_run_id, _when(latest.time))} |"
        )
    return View(
        key=f"metrics-{artifact_slug(server)}",
        description=f"Latest figures of {server}",
        markdown="\n".join(lines),
    )


def _metric_servers(session: Session, flow_run_id: str | None = None) -> list[str]:
    """Return the servers with figures (of one flow run, when given)."""
    query = select(MetricRow.server).distinct()
    if flow_run_id is not None:
        query = query.where(MetricRow.flow_run_id == flow_run_id)
    return sorted(session.scalars(query))


def views_after_run(
    session: Session, task_id: int, flow_run_id: str | None, link: RunLink
) -> list[View]:
    """Return the views one run of a task changes: its history, fleet, failures, metrics."""
    task = session.get(Task, task_id)
    if task is None:
        return []
    views = [task_history_view(session, task, link), fleet_view(session, link)]
    views.append(failures_view(session, link))
    if flow_run_id is not None and task.plugin is not None:
        views += [metrics_view(session, s, link) for s in _metric_servers(session, flow_run_id)]
    return views


def all_views(session: Session, link: RunLink) -> list[View]:
    """Return every view: fleet, failures, each task's history and each server's metrics."""
    views = [fleet_view(session, link), failures_view(session, link)]
    views += [
        task_history_view(session, task, link)
        for task in session.scalars(select(Task).order_by(Task.name))
    ]
    views += [metrics_view(session, server, link) for server in _metric_servers(session)]
    return views
