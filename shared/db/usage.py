"""Tables of storage usage (docs/design.md, "Storage usage"): a sample a day per repository, and
whether its storage is above the alert threshold."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, ts


class UsageSample(Base):
    """One sample a day per repository (the last of the day wins): growth over time."""

    __tablename__ = "usage_samples"

    repository: Mapped[str] = mapped_column(String(1024), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    free: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stored: Mapped[int] = mapped_column(BigInteger)
    logical: Mapped[int] = mapped_column(BigInteger)
    # for the ratios (None: sampled before revision 0010)
    unique_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    referenced_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sampled_at: Mapped[datetime] = ts()


class UsageState(Base):
    """Whether a repository's storage is above the alert threshold (an alert per crossing)."""

    __tablename__ = "usage_state"

    repository: Mapped[str] = mapped_column(String(1024), primary_key=True)
    above: Mapped[bool] = mapped_column(Boolean)
    percent: Mapped[float] = mapped_column(Float)
    changed_at: Mapped[datetime] = ts()
