"""Task catalogue: add, edit, remove, enable and look up tasks and their history."""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from svrctl.db.models import Server, Task, TaskHistory, utcnow
from svrctl.exceptions import BadInputError, ConflictError, NotFoundError
from svrctl.servers import get_server, servers_with_tag
from svrctl.specs import TaskSpec, validate

__all__ = [
    "add_task",
    "check_schedule",
    "get_task",
    "history_to_dict",
    "list_tasks",
    "next_runs",
    "recent_history",
    "remove_task",
    "set_enabled",
    "task_spec",
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


def _server_name(session: Session, task: Task) -> str | None:
    if task.server_id is None:
        return None
    return session.scalar(select(Server.name).where(Server.id == task.server_id))


def task_spec(session: Session, task: Task) -> TaskSpec:
    """Return the spec a task row was made from."""
    return TaskSpec.model_validate(
        {
            "name": task.name,
            "description": task.description,
            "kind": task.kind,
            "server": _server_name(session, task),
            "tag": task.server_tag,
            "plugin": task.plugin,
            "plugin_config": task.plugin_config,
            "command": task.command,
            "args": task.args,
            "schedule": task.schedule,
            "timezone": task.timezone,
            "enabled": task.enabled,
            "timeout_seconds": task.timeout_seconds,
            "retries": task.retries,
            "retry_delay_seconds": task.retry_delay_seconds,
            "overlap_policy": task.overlap_policy,
            "misfire_grace_seconds": task.misfire_grace_seconds,
            "pty": task.pty,
            "min_success": task.min_success,
        }
    )


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
    task.name = spec.name
    task.description = spec.description
    task.kind = spec.kind.value
    task.server_id = server_id
    task.server_tag = spec.tag
    task.plugin = spec.plugin
    task.plugin_config = spec.plugin_config
    task.command = spec.command
    task.args = spec.args
    task.schedule = spec.schedule
    task.timezone = spec.timezone
    task.enabled = spec.enabled
    task.timeout_seconds = spec.timeout_seconds
    task.retries = spec.retries
    task.retry_delay_seconds = spec.retry_delay_seconds
    task.overlap_policy = spec.overlap_policy.value
    task.misfire_grace_seconds = spec.misfire_grace_seconds
    task.pty = spec.pty
    task.min_success = spec.min_success
    upcoming = next_runs(spec.schedule, spec.timezone, 1) if spec.enabled else []
    task.next_run_at = upcoming[0] if upcoming else None


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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def task_to_dict(task: Task, server_name: str | None) -> dict[str, Any]:
    """Return a task as plain JSON-ready data."""
    return {
        "id": task.id,
        "name": task.name,
        "description": task.description,
        "kind": task.kind,
        "server": server_name,
        "tag": task.server_tag,
        "plugin": task.plugin,
        "plugin_config": task.plugin_config,
        "command": task.command,
        "args": task.args,
        "schedule": task.schedule,
        "timezone": task.timezone,
        "enabled": task.enabled,
        "timeout_seconds": task.timeout_seconds,
        "retries": task.retries,
        "retry_delay_seconds": task.retry_delay_seconds,
        "overlap_policy": task.overlap_policy,
        "misfire_grace_seconds": task.misfire_grace_seconds,
        "pty": task.pty,
        "min_success": task.min_success,
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
