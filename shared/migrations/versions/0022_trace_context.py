"""the W3C trace context of outbox rows and runs (docs/design.md, "Traces")

An event staged in the outbox keeps the trace context it was staged in; the relay puts it on the
NATS message's headers. A run keeps the context it was asked for in, so work a service starts on
its own (the snapshotter's dispatcher) joins the run's trace.

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-06 15:20:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0022"
down_revision = "0020"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("trace_context", _json(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trace_context", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trace_context")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("trace_context")
