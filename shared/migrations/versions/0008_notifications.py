"""notifications: the delivery log of messages to notification channels (email, Slack, Teams, webhooks)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(op.f("ix_notifications_event"), "notifications", ["event"])
    op.create_index(op.f("ix_notifications_state"), "notifications", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_notifications_state"), table_name="notifications")
    op.drop_index(op.f("ix_notifications_event"), table_name="notifications")
    op.drop_table("notifications")
