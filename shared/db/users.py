"""Tables of people (docs/design.md, "Access"): users, their browser sessions, and the one-time
setup token that lets the first admin be made on an empty database. API keys are in
shared/db/models.py (`ApiKey`: each belongs to a user and carries at most that user's role)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, UTCDateTime, ts


class User(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # argon2id (PHC string); None: no password yet (cannot log in; `vbm user passwd NAME`)
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = ts()
    updated_at: Mapped[datetime] = ts()


class WebSession(Base):
    """A browser session: the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token
    user: Mapped[str] = mapped_column(String(64), ForeignKey("users.name", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = ts()
    last_seen_at: Mapped[datetime] = ts()
    expires_at: Mapped[datetime] = ts()  # the absolute timeout; the idle one counts from last_seen_at
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SetupToken(Base):
    """The one-time token `vbm up` prints while no user exists (at most one row)."""

    __tablename__ = "setup_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = ts()
    expires_at: Mapped[datetime] = ts()
