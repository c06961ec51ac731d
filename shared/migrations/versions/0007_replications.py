"""replications: each verified restore point's copy to each secondary repository (3-2-1)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("restore_point_id", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("chunks_sent", sa.Integer(), nullable=False),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replications")),
        sa.UniqueConstraint("restore_point_id", "target", name=op.f("uq_replications_restore_point_id")),
    )
    op.create_index(op.f("ix_replications_state"), "replications", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_replications_state"), table_name="replications")
    op.drop_table("replications")
