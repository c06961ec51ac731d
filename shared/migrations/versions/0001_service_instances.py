"""service_instances: every vbm service process and how it ended

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_instances",
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_service_instances")),
    )
    op.create_index(op.f("ix_service_instances_service"), "service_instances", ["service"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_service_instances_service"), table_name="service_instances")
    op.drop_table("service_instances")
