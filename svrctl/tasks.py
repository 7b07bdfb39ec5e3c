"""Task catalogue: add, edit, remove, enable and look up tasks and their history."""

from __future__ import annotations

import enum
import math
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from svrctl.db.models import RunStatus, Server, Task, TaskHistory, utcnow
from svrctl.exceptions import BadInputError, ConflictError, NotFoundError
from svrctl.servers import get_server, servers_with_tag
from svrctl.specs import TaskSpec, validate

__all__ = [
    "add_task",
    "chained_after",
    "check_schedule",
    "get_task",
    "history_to_dict",
    "list_tasks",
    "next_runs",
    "recent_history",
    "remove_task",
    "set_enabled",
    "task_name_of",
    "task_spec",
    "task_stats",
    "task_to_dict",
    "update_task",
]


def get_task(session: Session, name: str) -> Task:
    """Return the task called ``name`` or raise NotFoundError."""
    task = session.scalar(select(Task).where(Task.name == name))
    if task is None:
        raise NotFoundError(f"no task named {name!r}: see `svrctl task list`", field="task")
    return task


def list_tasks(session: Session) -> list[tuple[Task, str | None]]:
    """Return every task with its server's name, by task name."""
    rows = session.execute(
        select(Task, Server.name).outerjoin(Server, Task.server_id == Server.id).order_by(Task.name)
    )
    return [(task, server_name) for task, server_name in rows]


# Spec fields kept under another name, or as a reference to another row.
_REFERENCES = {"server", "tag", "after"}
# Spec fields stored in the task row under the same name.
_DIRECT = tuple(f for f in TaskSpec.model_fields if f not in _REFERENCES)


def _server_name(session: Session, task: Task) -> str | None:
    if task.server_id is None:
        return None
    return session.scalar(select(Server.name).where(Server.id == task.server_id))


def task_name_of(session: Session, task_id: int | None) -> str | None:
    """Return the name of the task with id ``task_id`` (None for None or a missing task)."""
    if task_id is None:
        return None
    return session.scalar(select(Task.name).where(Task.id == task_id))


def task_spec(session: Session, task: Task) -> TaskSpec:
    """Return the spec a task row was made from."""
    data: dict[str, Any] = {f: getattr(task, f) for f in _DIRECT}
    data |= {
        "server": _server_name(session, task),
        "tag": task.server_tag,
        "after": task_name_of(session, task.after_task_id),
    }
    return TaskSpec.model_validate(data)


def next_runs(
    schedule: str, timezone: str, count: int, after: datetime | None = None
) -> list[datetime]:
    """Return the next ``count`` fire times of a cron schedule, in its time zone."""
    if not schedule:
        return []
    from svrctl.cron import next_fire_times, parse_cron

    return next_fire_times(parse_cron(schedule), after or utcnow(), count, timezone)


def check_schedule(schedule: str, timezone: str) -> None:
    """Refuse a schedule that no Prefect schedule can run exactly (see docs/cron.md).

    Raises:
        BadInputError: The schedule cannot become an exact Prefect schedule; the
            message names the schedule field and says what to write instead.
    """
    if not schedule:
        return
    problem = _schedule_problem(schedule, timezone, date.today())
    if problem is not None:
        raise BadInputError(f"invalid schedule: {problem}", field="schedule")


@lru_cache(maxsize=512)
def _schedule_problem(schedule: str, timezone: str, today: date) -> str | None:
    """Return why a schedule cannot run exactly under Prefect, or None.

    Cached per day: the check examines decades of daylight saving changes (~20 ms),
    and scripts add many tasks with the same schedule.
    """
    from svrctl.cron import CronError
    from svrctl.schedules import check_representable

    try:
        check_representable(schedule, timezone)
    except CronError as exc:
        return exc.message
    return None


def _apply(session: Session, task: Task, spec: TaskSpec) -> None:
    if (spec.schedule, spec.timezone) != (task.schedule, task.timezone):
        # Only a new or changed schedule is checked: an older task whose schedule
        # cannot run exactly can still be disabled, renamed or removed.
        check_schedule(spec.schedule, spec.timezone)
    server_id: int | None = None
    if spec.server:
        server_id = get_server(session, spec.server).id
    if spec.tag and not servers_with_tag(session, spec.tag):
        raise NotFoundError(
            f"no server has the tag {spec.tag!r}: add it with `svrctl server edit NAME --tag "
            f"{spec.tag}`, or check the spelling",
            field="tag",
        )
    if spec.plugin:
        from svrctl.plugin import get_plugin, validate_config

        validate_config(get_plugin(spec.plugin), spec.plugin_config)
    after_id = _chain_source(session, task.id, spec.name, spec.after)
    if spec.notify:
        _check_channels(session, spec.notify)
    for name in _DIRECT:
        value = getattr(spec, name)
        setattr(task, name, value.value if isinstance(value, enum.Enum) else value)
    task.server_id = server_id
    task.server_tag = spec.tag
    task.after_task_id = after_id
    upcoming = next_runs(spec.schedule, spec.timezone, 1) if spec.enabled else []
    task.next_run_at = upcoming[0] if upcoming else None


def _chain_source(
    session: Session, task_id: int | None, name: str, after: str | None
) -> int | None:
    """Return the id of the task that task ``name`` runs after; refuse an unknown one or a loop."""
    if after is None:
        return None
    source = session.scalar(select(Task).where(Task.name == after))
    if source is None:
        raise NotFoundError(
            f"no task named {after!r} to run after: see `svrctl task list`", field="after"
        )
    seen = [after]
    step: Task | None = source
    while step is not None and step.after_task_id is not None:
        if task_id is not None and step.after_task_id == task_id:
            loop = " after ".join([name, *seen, name])
            raise BadInputError(
                f"invalid after: chaining {name} after {after} makes a loop ({loop})",
                field="after",
            )
        step = session.get(Task, step.after_task_id)
        if step is not None:
            seen.append(step.name)
    return source.id


def _check_channels(session: Session, names: list[str]) -> None:
    """Refuse notification channels that do not exist."""
    from svrctl.db.models import NotifyChannel

    known = set(session.scalars(select(NotifyChannel.name).where(NotifyChannel.name.in_(names))))
    missing = [n for n in names if n not in known]
    if missing:
        raise NotFoundError(
            f"no notification channel named {', '.join(repr(n) for n in missing)}: "
            "see `svrctl notify list`, or add one with `svrctl notify add`",
            field="notify",
        )


def chained_after(session: Session, task: Task) -> list[str]:
    """Return the names of the tasks that run after ``task``."""
    return list(
        session.scalars(select(Task.name).where(Task.after_task_id == task.id).order_by(Task.name))
    )


def add_task(session: Session, spec: TaskSpec) -> Task:
    """Insert a new task; its name must be free and its target must exist."""
    if session.scalar(select(Task.id).where(Task.name == spec.name)) is not None:
        raise ConflictError(
            f"a task named {spec.name!r} already exists: pick another name, "
            f"or change it with `svrctl task edit {spec.name}`",
            field="name",
        )
    task = Task()
    _apply(session, task, spec)
    session.add(task)
    session.flush()
    return task


def update_task(session: Session, name: str, changes: dict[str, Any]) -> Task:
    """Apply ``changes`` to the task called ``name``, validating the result as a whole."""
    task = get_task(session, name)
    merged = task_spec(session, task).model_dump() | changes
    spec = validate(TaskSpec, merged)
    if spec.name != task.name and session.scalar(select(Task.id).where(Task.name == spec.name)):
        raise ConflictError(f"a task named {spec.name!r} already exists", field="name")
    _apply(session, task, spec)
    session.flush()
    return task


def set_enabled(session: Session, name: str, enabled: bool) -> Task:
    """Enable or disable a task."""
    return update_task(session, name, {"enabled": enabled})


def remove_task(session: Session, name: str) -> None:
    """Delete a task and its history."""
    task = get_task(session, name)
    followers = chained_after(session, task)
    if followers:
        first = followers[0]
        raise ConflictError(
            f"task {name} cannot be removed: {', '.join(followers)} "
            f"{'runs' if len(followers) == 1 else 'run'} after it; unchain "
            f"{'it' if len(followers) == 1 else 'them'} first "
            f"(`svrctl task edit {first} --after ''`) or remove "
            f"{'it' if len(followers) == 1 else 'them'}",
            field="after",
        )
    session.delete(task)
    session.flush()


def recent_history(session: Session, task: Task, limit: int = 20) -> list[TaskHistory]:
    """Return the latest ``limit`` history rows of a task, newest first."""
    return list(
        session.scalars(
            select(TaskHistory)
            .where(TaskHistory.task_id == task.id)
            .order_by(TaskHistory.started_at.desc(), TaskHistory.id.desc())
            .limit(limit)
        )
    )


# The statuses of a step that ran to an end: their durations make the median and p95.
_SUCCESS = RunStatus.SUCCESS.value
_FAILURES = tuple(s.value for s in RunStatus if s.counts_as_failure)


def task_stats(
    session: Session, task: Task, days: int = 7, now: datetime | None = None
) -> dict[str, Any]:
    """Return a task's run figures over its history rows that started in the last ``days``.

    Everything is computed in the database over the rows of the window, which the
    ``(task_id, started_at)`` index bounds: counts by status, the success rate
    (successes among successes and failures), the median and p95 duration (nearest
    rank) of the rows that succeeded or failed, and the last success and failure.
    Each history row is one attempt on one server. The task's own counters, which
    retention never lowers, come along under ``all_time``.
    """
    since = (now or utcnow()) - timedelta(days=days)
    window = (TaskHistory.task_id == task.id, TaskHistory.started_at >= since)
    counts: dict[str, int] = {}
    timed: dict[str, int] = {}
    last: dict[str, datetime] = {}
    for status, count, with_duration, latest in session.execute(
        select(
            TaskHistory.status,
            func.count(),
            func.count(TaskHistory.duration_ms),
            func.max(TaskHistory.started_at),
        )
        .where(*window)
        .group_by(TaskHistory.status)
    ):
        counts[status], timed[status], last[status] = count, with_duration, latest
    successes = counts.get(_SUCCESS, 0)
    failures = sum(counts.get(s, 0) for s in _FAILURES)
    ended = sum(timed.get(s, 0) for s in (_SUCCESS, *_FAILURES))
    median, p95 = _duration_ranks(session, window, ended)
    failed_at = [(last[s], s) for s in _FAILURES if s in last]
    last_failure = max(failed_at) if failed_at else None
    return {
        "task": task.name,
        "days": days,
        "since": since.isoformat(),
        "runs": sum(counts.values()),
        "by_status": dict(sorted(counts.items())),
        "successes": successes,
        "failures": failures,
        "success_rate": round(successes / (successes + failures), 4)
        if successes + failures
        else None,
        "duration_median_ms": median,
        "duration_p95_ms": p95,
        "last_success_at": _iso(last.get(_SUCCESS)),
        "last_failure_at": _iso(last_failure[0]) if last_failure else None,
        "last_failure_status": last_failure[1] if last_failure else None,
        "all_time": {
            "run_count": task.run_count,
            "success_count": task.success_count,
            "failure_count": task.failure_count,
        },
    }


def _duration_ranks(
    session: Session, window: tuple[Any, ...], count: int
) -> tuple[int | None, int | None]:
    """Return the nearest-rank median and p95 of the window's ``count`` ended durations."""
    if count == 0:
        return None, None
    where = (
        *window,
        TaskHistory.status.in_((_SUCCESS, *_FAILURES)),
        TaskHistory.duration_ms.is_not(None),
    )
    if session.get_bind().dialect.name == "postgresql":
        row = session.execute(
            select(
                func.percentile_disc(0.5).within_group(TaskHistory.duration_ms),
                func.percentile_disc(0.95).within_group(TaskHistory.duration_ms),
            ).where(*where)
        ).one()
        return row[0], row[1]
    # SQLite has no percentile function: read the value at each rank of the sorted window.
    ordered = select(TaskHistory.duration_ms).where(*where).order_by(TaskHistory.duration_ms)
    median, p95 = (
        session.scalar(ordered.offset(math.ceil(q * count) - 1).limit(1)) for q in (0.5, 0.95)
    )
    return median, p95


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def task_to_dict(
    task: Task, server_name: str | None, after_name: str | None = None
) -> dict[str, Any]:
    """Return a task as plain JSON-ready data (``after_name``: the task it runs after)."""
    data: dict[str, Any] = {"id": task.id}
    for name in TaskSpec.model_fields:
        if name == "server":
            data[name] = server_name
        elif name == "tag":
            data[name] = task.server_tag
        elif name == "after":
            data[name] = after_name
        else:
            data[name] = getattr(task, name)
    return data | {
        "run_count": task.run_count,
        "success_count": task.success_count,
        "failure_count": task.failure_count,
        "last_run_at": _iso(task.last_run_at),
        "last_status": task.last_status,
        "last_duration_ms": task.last_duration_ms,
        "next_run_at": _iso(task.next_run_at),
        "deployment_id": task.deployment_id,
        "created": _iso(task.created),
        "updated": _iso(task.updated),
    }


def history_to_dict(row: TaskHistory) -> dict[str, Any]:
    """Return a history row as plain JSON-ready data."""
    return {
        "id": row.id,
        "task_id": row.task_id,
        "flow_run_id": row.flow_run_id,
        "server_name": row.server_name,
        "attempt": row.attempt,
        "triggered_by": row.triggered_by,
        "status": row.status,
        "success": row.success,
        "exit_code": row.exit_code,
        "output": row.output,
        "output_truncated": row.output_truncated,
        "output_bytes": row.output_bytes,
        "error": row.error,
        "error_truncated": row.error_truncated,
        "error_bytes": row.error_bytes,
        "duration_ms": row.duration_ms,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }
