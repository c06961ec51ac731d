"""Storage usage: the threshold alert fires once per crossing, on a small real file system."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from shared.catalog import usage
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Alert
from shared.db.usage import UsageSample
from shared.repo import LocalBackend, Repository
from shared.repo.locations import NO_CREDENTIALS
from tests.plugins.tmpfs import mount_tmpfs, unmount

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_the_80_percent_alert_fires_once_per_crossing(tmp_path: Path) -> None:
    fs = mount_tmpfs(tmp_path / "fs", "8m")
    try:
        repo_dir = fs / "repo"
        asyncio.run(Repository.init(LocalBackend(repo_dir)))
        engine = make_engine(f"sqlite:///{tmp_path / 'vbm.db'}")
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        clock = [T0]

        def sample() -> dict[str, object]:
            measured = asyncio.run(usage.measure(str(repo_dir), NO_CREDENTIALS))
            with sessions.begin() as s:
                view = usage.record(s, str(repo_dir), measured, 80.0, clock[0])
            clock[0] += timedelta(hours=1)
            return view

        def alerts() -> list[Alert]:
            with sessions() as s:
                return list(s.scalars(select(Alert).where(Alert.kind == "storage_usage")))

        assert sample()["used_percent"] < 80 and alerts() == []  # type: ignore[operator]
        filler = fs / "filler"
        filler.write_bytes(os.urandom(7 * 1024 * 1024))  # ~87% of 8 MiB
        view = sample()
        assert view["used_percent"] >= 80  # type: ignore[operator]
        assert len(alerts()) == 1 and "% full (threshold 80%)" in alerts()[0].message
        assert str(repo_dir) in alerts()[0].message and "KiB free;" in alerts()[0].message
        sample()
        sample()
        assert len(alerts()) == 1  # still above: no second alert
        filler.unlink()
        assert sample()["used_percent"] < 80  # type: ignore[operator]
        filler.write_bytes(os.urandom(7 * 1024 * 1024))
        sample()
        assert len(alerts()) == 2  # a new crossing, a new alert
        with sessions() as s:
            days = list(s.scalars(select(UsageSample)))
        assert len(days) == 1 and days[0].total == 8 * 1024 * 1024  # one sample per day (the last wins)
        engine.dispose()
    finally:
        unmount(fs)
