"""usage samples keep what the ratios need: the unique chunks' plain bytes and the bytes referenced

so that `GET /api/v1/repositories` answers its deduplication and compression ratios from the
latest stored sample, measuring nothing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_samples") as batch:
        batch.add_column(sa.Column("unique_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("referenced_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_samples") as batch:
        batch.drop_column("referenced_bytes")
        batch.drop_column("unique_bytes")
