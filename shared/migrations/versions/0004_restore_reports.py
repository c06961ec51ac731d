"""restore reports: signed evidence of restore tests; restores of restore-test runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 13:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restore_reports",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("restore_point_id", sa.String(length=64), nullable=False),
        sa.Column("vm_name", sa.String(length=255), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restore_reports")),
    )
    with op.batch_alter_table("restore_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_restore_reports_vm_name"), ["vm_name"], unique=False)

    with op.batch_alter_table("restores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_id", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_restores_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("restores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restores_run_id"))
        batch_op.drop_column("run_id")
    with op.batch_alter_table("restore_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restore_reports_vm_name"))
    op.drop_table("restore_reports")
