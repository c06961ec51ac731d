"""The table of idempotency keys (docs/design.md, "Idempotency keys"): the first answer to a
`POST` sent with an `Idempotency-Key`, kept 24 h so that a retry gets it again and starts
nothing twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, JSONType, UTCDateTime


class IdempotencyKey(Base):
    """One key of one caller on one route, written in the same transaction as the work it
    answered: a row that can be read holds its answer (there is no "in progress" row)."""

    __tablename__ = "idempotency_keys"

    caller: Mapped[str] = mapped_column(String(255), primary_key=True)  # Identity.actor, os:NAME
    route: Mapped[str] = mapped_column(String(512), primary_key=True)  # "POST /api/v1/restores"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))  # of the request's body
    status: Mapped[int] = mapped_column(Integer)  # of the first answer
    body: Mapped[Any] = mapped_column(JSONType)  # of the first answer
    location: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # its Location header
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)  # expires 24 h after
