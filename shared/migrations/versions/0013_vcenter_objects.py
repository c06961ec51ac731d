"""vCenters become objects managed through the API: their password (encrypted with the secret
key), CA, hot-add proxy, where they come from ("config" or "api") and when they were added.

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-06 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vcenters") as batch:
        batch.add_column(sa.Column("password", sa.Text(), nullable=True))
        batch.add_column(sa.Column("ca_pem", sa.Text(), nullable=True))
        batch.add_column(sa.Column("ca_file", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("hotadd_proxy", sa.String(255), nullable=True))
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="config"))
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM vcenters WHERE source = 'api'")
    with op.batch_alter_table("vcenters") as batch:
        for column in ("created_at", "source", "hotadd_proxy", "ca_file", "ca_pem", "password"):
            batch.drop_column(column)
