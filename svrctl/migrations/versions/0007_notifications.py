"""Notifications: channels, the delivery log, and each task's policy and failure state.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 07:40:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _stamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated", sa.DateTime(), server_default=sa.func.now(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "notify_channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("topic", sa.String(length=255), nullable=True),
        sa.Column("secret", sa.String(length=128), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("markdown", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("summaries", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notify_channels")),
        sa.UniqueConstraint("name", name=op.f("uq_notify_channels_name")),
    )
    op.create_table(
        "notification_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("task_name", sa.String(length=64), nullable=True),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_notification_log_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_log")),
    )
    with op.batch_alter_table("notification_log", schema=None) as batch_op:
        batch_op.create_index("ix_notification_log_time", ["time"])
        batch_op.create_index(batch_op.f("ix_notification_log_task_id"), ["task_id"])
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("notify_after_failures", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("notify_remind_hours", sa.Double(), nullable=True))
        batch_op.add_column(
            sa.Column("notify_on_success", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("failing_since", sa.DateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("failure_streak", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("failure_notified_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        for column in (
            "failure_notified_at",
            "failure_streak",
            "failing_since",
            "notify_on_success",
            "notify_remind_hours",
            "notify_after_failures",
            "notify",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("notification_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_log_task_id"))
        batch_op.drop_index("ix_notification_log_time")
    op.drop_table("notification_log")
    op.drop_table("notify_channels")
