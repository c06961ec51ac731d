"""channels: Telegram and sendmail channels, and a level per channel

`token` (a Telegram bot's token, a Fernet token like `url` and `secret`), `options` (the plain
fields of the channel's type: chat_id and api_url for Telegram, the sendmail path) and `level`
(the lowest level the channel hears of; null: info, so existing channels hear what they heard).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 15:30:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("token", sa.Text(), nullable=True))
        batch.add_column(sa.Column("options", _json(), nullable=True))
        batch.add_column(sa.Column("level", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("level")
        batch.drop_column("options")
        batch.drop_column("token")
