"""Tables of the scheduling of work (docs/design.md, "Scheduling of work").

- `leases`: a distributed counting semaphore. A resource (a datastore, a host, a repository) with
  a limit of N has at most N rows, slots 0..N-1, each held by one disk stream until it releases
  it or its `expires_at` passes (a holder that died). Taking a slot is an INSERT that the primary
  key refuses when the slot is taken: no lock, the same on SQLite and PostgreSQL.
- `throttles`: a datastore's stream limit as storage latency control has lowered it (movers
  write it, the dispatcher and every mover read it).
- `run_log`: what happened to a run, in words, for people (waits, snapshots, retries, throttling).
- `meta`: small values of the installation (the key that marks vbm's snapshots).
- `dispatch_lock`: one row; the dispatcher's pass takes it first, so two snapshotters never admit
  the same slot twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, UTCDateTime


class Lease(Base):
    __tablename__ = "leases"

    resource: Mapped[str] = mapped_column(String(512), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Throttle(Base):
    __tablename__ = "throttles"

    resource: Mapped[str] = mapped_column(String(512), primary_key=True)
    limit_now: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RunLogLine(Base):
    __tablename__ = "run_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(128), index=True)
    task_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)


class Meta(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DispatchLock(Base):
    __tablename__ = "dispatch_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime())
