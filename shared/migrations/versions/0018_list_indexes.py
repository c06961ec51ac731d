"""lists page by time: indexes on (created_at, id) of runs and (finished_at, id) of restore points

so that a page of a large catalog (GET /api/v1/backups, /runs: newest first, by offset or cursor)
is read in index order rather than by sorting every row (bench/catalog.py).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 09:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_created_at_id", "runs", ["created_at", "id"])
    op.create_index("ix_restore_points_finished_at_id", "restore_points", ["finished_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_restore_points_finished_at_id", "restore_points")
    op.drop_index("ix_runs_created_at_id", "runs")
