"""Task history: one index that answers a task's window of runs without reading the rows.

The index on ``(task_id, started_at)`` becomes ``(task_id, started_at, id, status,
duration_ms)``: ``task history`` reads a task's newest rows in index order (ties on
``started_at`` broken by ``id``), and ``task stats`` counts statuses and ranks
durations over a window from the index alone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 10:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD = "ix_task_history_task_id_started_at"
NEW = "ix_task_history_task_id_started_at_id_status_duration_ms"


def upgrade() -> None:
    with op.batch_alter_table("task_history", schema=None) as batch_op:
        batch_op.create_index(NEW, ["task_id", "started_at", "id", "status", "duration_ms"])
        batch_op.drop_index(OLD)


def downgrade() -> None:
    with op.batch_alter_table("task_history", schema=None) as batch_op:
        batch_op.create_index(OLD, ["task_id", "started_at"])
        batch_op.drop_index(NEW)
