"""The SHA-256 of each disk image of a restore point (manifest.json, roadmap 2.1/2.2).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("restore_points") as batch:
        batch.add_column(sa.Column("sha256", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("restore_points") as batch:
        batch.drop_column("sha256")
