"""The audit log's table (docs/design.md, "Audit log"): append-only, each record chained to the
one before it by `prev_hash`, which is UNIQUE so that two writers can never fork the chain (the
second insert with the same predecessor fails and is retried on the new end)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, UTCDateTime


class AuditRecord(Base):
    __tablename__ = "audit_log"

    # the order: written as the previous record's id + 1 (contiguous, so a gap is a removal)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(255), index=True)
    source: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(255), index=True)
    target: Mapped[str] = mapped_column(String(1024))
    params: Mapped[str] = mapped_column(Text)  # canonical JSON text, secrets masked
    result: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(String(128))
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
