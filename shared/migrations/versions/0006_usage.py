"""usage: daily storage samples per repository, and whether it is above the alert threshold

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 13:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_samples",
        sa.Column("repository", sa.String(length=1024), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("free", sa.BigInteger(), nullable=True),
        sa.Column("stored", sa.BigInteger(), nullable=False),
        sa.Column("logical", sa.BigInteger(), nullable=False),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", "day", name=op.f("pk_usage_samples")),
    )
    op.create_table(
        "usage_state",
        sa.Column("repository", sa.String(length=1024), nullable=False),
        sa.Column("above", sa.Boolean(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", name=op.f("pk_usage_state")),
    )


def downgrade() -> None:
    op.drop_table("usage_state")
    op.drop_table("usage_samples")
