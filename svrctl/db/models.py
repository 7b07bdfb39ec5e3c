"""Typed SQLAlchemy models of the app database: servers, tasks and task history."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "ChainOn",
    "ChannelKind",
    "HostKeyPolicy",
    "MetricRow",
    "NotificationLog",
    "NotifyChannel",
    "OverlapPolicy",
    "RunStatus",
    "Server",
    "Task",
    "TaskHistory",
    "TaskKind",
    "TriggeredBy",
    "UTCDateTime",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Store datetimes as naive UTC and hand them back aware, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to naive UTC before it is written."""
        if value is None:
            return None
        if value.tzinfo is None:
            msg = "naive datetimes are ambiguous; pass an aware datetime"
            raise ValueError(msg)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to a datetime read back from the database."""
        return None if value is None else value.replace(tzinfo=UTC)


class HostKeyPolicy(enum.StrEnum):
    """How a server's SSH host key is trusted."""

    STRICT = "strict"
    ACCEPT_NEW = "accept-new"


class TaskKind(enum.StrEnum):
    """Where a task's step runs."""

    SSH = "ssh"
    LOCAL = "local"
    PLUGIN = "plugin"


class OverlapPolicy(enum.StrEnum):
    """What a run does when the previous run of its task is still going."""

    SKIP = "skip"
    QUEUE = "queue"


class RunStatus(enum.StrEnum):
    """Status of one row of task history."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    MISSED = "missed"
    CANCELLED = "cancelled"
    # the task's --only-if check exited non-zero: the step did not run
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        """True for every status but ``running``."""
        return self is not RunStatus.RUNNING

    @property
    def counts_as_failure(self) -> bool:
        """True for the outcomes that count as failed runs in task stats."""
        return self in {RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED}


class ChainOn(enum.StrEnum):
    """Which ends of the task it runs after start a chained task."""

    SUCCESS = "success"
    FAILURE = "failure"
    ANY = "any"


class TriggeredBy(enum.StrEnum):
    """What started a run."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    API = "api"
    RETRY = "retry"
    CHAIN = "chain"


class Base(DeclarativeBase):
    """Declarative base: shared id and timestamps, stable constraint names."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-1)
    created: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), sort_order=1
    )
    updated: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now(), sort_order=1
    )


class Server(Base):
    """A machine svrctl runs commands on."""

    __tablename__ = "servers"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(default=22)
    username: Mapped[str] = mapped_column(String(64))
    key_path: Mapped[str | None] = mapped_column(String(1024))
    host_key_policy: Mapped[str] = mapped_column(String(16), default=HostKeyPolicy.STRICT.value)
    work_pool: Mapped[str | None] = mapped_column(String(128))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    os_type: Mapped[str | None] = mapped_column(String(64))
    os_version: Mapped[str | None] = mapped_column(String(128))
    last_seen: Mapped[datetime | None]
    # how to reach and log in (secrets are Prefect Secret block names, never values)
    jump_host_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="RESTRICT"), index=True
    )
    connect_timeout_seconds: Mapped[int] = mapped_column(default=10, server_default="10")
    key_passphrase_secret: Mapped[str | None] = mapped_column(String(128))
    password_secret: Mapped[str | None] = mapped_column(String(128))
    sudo_password_secret: Mapped[str | None] = mapped_column(String(128))
    # at most this many runs touch the server at once, across all tasks (None: no limit)
    max_concurrent: Mapped[int | None]

    tasks: Mapped[list[Task]] = relationship(back_populates="server", lazy="raise")


class Task(Base):
    """A command, local command or plugin run, on demand or on a schedule."""

    __tablename__ = "tasks"

    # identity and target
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="RESTRICT"), index=True
    )
    server_tag: Mapped[str | None] = mapped_column(String(64))
    plugin: Mapped[str | None] = mapped_column(String(64))
    plugin_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the step
    command: Mapped[str | None] = mapped_column(Text)
    args: Mapped[list[Any] | dict[str, Any] | None] = mapped_column(JSON)
    # scheduling
    schedule: Mapped[str] = mapped_column(String(255), default="")
    timezone: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # run policy
    timeout_seconds: Mapped[int] = mapped_column(default=300)
    retries: Mapped[int] = mapped_column(default=0)
    retry_delay_seconds: Mapped[int] = mapped_column(default=30)
    overlap_policy: Mapped[str] = mapped_column(String(16), default=OverlapPolicy.SKIP.value)
    misfire_grace_seconds: Mapped[int] = mapped_column(default=60)
    pty: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    min_success: Mapped[int | None]
    # a check command on the same target; when it exits non-zero the run is skipped
    only_if: Mapped[str | None] = mapped_column(Text)
    # chain: run this task when the task after_task_id ends as after_on says
    after_task_id: Mapped[int | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="RESTRICT"), index=True
    )
    after_on: Mapped[str | None] = mapped_column(String(16))
    # notifications: channel names (None: the default set) and the policy
    notify: Mapped[list[str] | None] = mapped_column(JSON)
    notify_after_failures: Mapped[int] = mapped_column(default=1, server_default="1")
    notify_remind_hours: Mapped[float | None]
    notify_on_success: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # notification state: the failure streak and when it was last announced
    failing_since: Mapped[datetime | None]
    failure_streak: Mapped[int] = mapped_column(default=0, server_default="0")
    failure_notified_at: Mapped[datetime | None]
    # stats
    run_count: Mapped[int] = mapped_column(default=0)
    success_count: Mapped[int] = mapped_column(default=0)
    failure_count: Mapped[int] = mapped_column(default=0)
    last_run_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_duration_ms: Mapped[int | None]
    next_run_at: Mapped[datetime | None]
    deployment_id: Mapped[str | None] = mapped_column(String(36))

    server: Mapped[Server | None] = relationship(back_populates="tasks", lazy="raise")
    history: Mapped[list[TaskHistory]] = relationship(
        back_populates="task", lazy="raise", passive_deletes=True
    )


class TaskHistory(Base):
    """One attempt of one run of a task, on one server."""

    __tablename__ = "task_history"
    __table_args__ = (
        # a task's window of runs, read from the index alone (see migration 0008)
        Index(
            "ix_task_history_task_id_started_at_id_status_duration_ms",
            "task_id",
            "started_at",
            "id",
            "status",
            "duration_ms",
        ),
        Index("ix_task_history_started_at", "started_at"),
        Index("ix_task_history_status", "status"),
    )

    # what ran
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    server_name: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(default=1)
    triggered_by: Mapped[str] = mapped_column(String(16), default=TriggeredBy.MANUAL.value)
    # outcome
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    success: Mapped[bool | None] = mapped_column(Boolean)
    exit_code: Mapped[int | None]
    output: Mapped[str] = mapped_column(Text, default="")
    output_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    output_bytes: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    error_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    error_bytes: Mapped[int] = mapped_column(default=0)
    duration_ms: Mapped[int | None]
    # when
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    task: Mapped[Task] = relationship(back_populates="history", lazy="raise")


class ChannelKind(enum.StrEnum):
    """How a notification channel delivers."""

    GOTIFY = "gotify"
    NTFY = "ntfy"
    APPRISE = "apprise"


class NotifyChannel(Base):
    """Where notifications go; tokens are Prefect Secret block names, never values."""

    __tablename__ = "notify_channels"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(String(2048))
    topic: Mapped[str | None] = mapped_column(String(255))
    # Secret block holding the token (gotify, ntfy) or the whole URL (apprise)
    secret: Mapped[str | None] = mapped_column(String(128))
    priority: Mapped[int | None]
    markdown: Mapped[bool] = mapped_column(Boolean, default=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    summaries: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class NotificationLog(Base):
    """One delivery attempt of one notification to one channel."""

    __tablename__ = "notification_log"
    __table_args__ = (Index("ix_notification_log_time", "time"),)

    channel: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[int | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )
    task_name: Mapped[str | None] = mapped_column(String(64))
    # failure, still_failing, recovery, success, finding, missed, summary or test
    event: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16))
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    time: Mapped[datetime] = mapped_column(default=utcnow)


class MetricRow(Base):
    """One figure a plugin measured on a server (or on the worker's host) at a time."""

    __tablename__ = "metrics"
    __table_args__ = (
        Index("ix_metrics_server_name_time", "server", "name", "time"),
        Index("ix_metrics_time", "time"),
    )

    server: Mapped[str] = mapped_column(String(255))
    plugin: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float]
    unit: Mapped[str] = mapped_column(String(32), default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    task_id: Mapped[int | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
