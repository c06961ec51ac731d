"""The event log: every state change of runs, tasks, restores and replications and every alert,
with a monotonically increasing id, for live events (`GET /api/v1/events`, `vbm events`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 09:10:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=True),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("task_id", sa.String(length=160), nullable=True),
        sa.Column("restore_id", sa.String(length=64), nullable=True),
        sa.Column("data", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_log")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_event_log_at"), "event_log", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_event_log_at"), table_name="event_log")
    op.drop_table("event_log")
