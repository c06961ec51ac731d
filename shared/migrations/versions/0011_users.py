"""people: users (argon2id passwords, lockout), browser sessions, the one-time setup token; API
keys belong to a user and carry a role and an optional expiry

Keys made before this revision had full power: they become admin keys owned by a user `admin`
(made here, with no password: it cannot log in until `vbm user passwd admin`), and the migration
says so in its log.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 08:20:00
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("last_login_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_users")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["user"], ["users.name"], name=op.f("fk_web_sessions_user_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_user"), "web_sessions", ["user"])
    op.create_table(
        "setup_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_setup_tokens")),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=False, server_default="admin"))
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="admin"))
        batch.add_column(sa.Column("expires_at", TS, nullable=True))
        batch.create_index(batch.f("ix_api_keys_owner"), ["owner"])
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("owner", server_default=None)
        batch.alter_column("role", server_default=None)

    conn = op.get_bind()
    keys = conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar_one()
    if keys:
        conn.execute(
            sa.text(
                "INSERT INTO users (name, display_name, role, enabled, password_hash, failed_logins,"
                " created_at, updated_at) SELECT 'admin', :display, 'admin', :enabled, NULL, 0,"
                " min(created_at), min(created_at) FROM api_keys"
            ),
            {"display": "made by revision 0011 for the API keys of before", "enabled": True},
        )
        log.warning(
            "revision 0011: the %d API key(s) made before users existed are now admin keys owned by"
            " the user 'admin' (no password: set one with `vbm user passwd admin` to log in)",
            keys,
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index(batch.f("ix_api_keys_owner"))
        batch.drop_column("expires_at")
        batch.drop_column("role")
        batch.drop_column("owner")
    op.drop_table("setup_tokens")
    op.drop_index(op.f("ix_web_sessions_user"), "web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("users")
