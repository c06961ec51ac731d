"""restore and verify: restores, verify_rounds, verification details on restore_points

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("restore_points", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verify_notes", JSON, nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("verify_how", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("verify_requested_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "verify_rounds",
        sa.Column("repository", sa.String(length=1024), nullable=False),
        sa.Column("slices", sa.Integer(), nullable=False),
        sa.Column("next_slice", sa.Integer(), nullable=False),
        sa.Column("round_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_cycle_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("damaged", JSON, nullable=False),
        sa.PrimaryKeyConstraint("repository", name=op.f("pk_verify_rounds")),
    )

    op.create_table(
        "restores",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("restore_point_id", sa.String(length=64), nullable=False),
        sa.Column("repository", sa.String(length=1024), nullable=False),
        sa.Column("vcenter", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("target", JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("vm_moref", sa.String(length=64), nullable=True),
        sa.Column("created", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restores")),
    )
    with op.batch_alter_table("restores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_restores_restore_point_id"), ["restore_point_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_restores_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("restores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restores_state"))
        batch_op.drop_index(batch_op.f("ix_restores_restore_point_id"))
    op.drop_table("restores")
    op.drop_table("verify_rounds")
    with op.batch_alter_table("restore_points", schema=None) as batch_op:
        batch_op.drop_column("verify_requested_at")
        batch_op.drop_column("verify_how")
        batch_op.drop_column("verify_notes")
