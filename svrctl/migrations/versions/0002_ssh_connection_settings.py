"""SSH connection settings: jump host, timeouts, secret names; per-task pty.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 04:15:11.520660
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("jump_host_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("connect_timeout_seconds", sa.Integer(), server_default="10", nullable=False)
        )
        batch_op.add_column(
            sa.Column("key_passphrase_secret", sa.String(length=128), nullable=True)
        )
        batch_op.add_column(sa.Column("password_secret", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("sudo_password_secret", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_servers_jump_host_id"), ["jump_host_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_servers_jump_host_id_servers"),
            "servers",
            ["jump_host_id"],
            ["id"],
            ondelete="RESTRICT",
        )

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pty", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("pty")

    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_servers_jump_host_id_servers"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_servers_jump_host_id"))
        batch_op.drop_column("sudo_password_secret")
        batch_op.drop_column("password_secret")
        batch_op.drop_column("key_passphrase_secret")
        batch_op.drop_column("connect_timeout_seconds")
        batch_op.drop_column("jump_host_id")
