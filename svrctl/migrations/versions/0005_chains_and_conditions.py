"""Chains (after_task_id, after_on) and conditions (only_if) on tasks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 07:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("only_if", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("after_task_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("after_on", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_tasks_after_task_id"), ["after_task_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_tasks_after_task_id_tasks"),
            "tasks",
            ["after_task_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_tasks_after_task_id_tasks"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_tasks_after_task_id"))
        batch_op.drop_column("after_on")
        batch_op.drop_column("after_task_id")
        batch_op.drop_column("only_if")
