"""The daily configuration backup the scheduler writes to a repository (SQLite and PostgreSQL):
once a day, the newest `keep` kept, the files restore; no passphrase: skipped with one alert;
a location that is no repository yet: waited for, nothing written there."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.confbackup.archive import restore_backup
from shared.confbackup.scheduled import PREFIX, backup_round, newest_slot
from shared.db.models import Alert
from shared.repo import LocalBackend, Repository
from shared.settings import ConfigBackupSettings, Settings

PASSPHRASE = "scheduled passphrase 1"
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def settings(tmp_path: Path, db_url: str, **cfg: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        repository=str(tmp_path / "repo"),
        config_backup=ConfigBackupSettings.model_validate({"at": "02:30", "keep": 2, **cfg}),
    )


def test_newest_slot() -> None:
    assert newest_slot("02:30", T0) == datetime(2026, 11, 26, 2, 30, tzinfo=UTC)
    assert newest_slot("10:00", T0) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_daily_backups_keep_the_newest(sessions: sessionmaker[Session], db_url: str, tmp_path: Path) -> None:
    s = settings(tmp_path, db_url, passphrase=PASSPHRASE)
    first = asyncio.run(backup_round(s, sessions, T0))
    assert first.skipped and first.skipped.startswith("first round")  # the first file: the next slot
    assert asyncio.run(backup_round(s, sessions, T0 + timedelta(days=1))).skipped == "not a repository yet"
    assert not (tmp_path / "repo").exists()  # vbm writes nowhere it did not make

    asyncio.run(Repository.init(LocalBackend(str(tmp_path / "repo"))))
    written = []
    for day in range(2, 5):
        now = T0 + timedelta(days=day)
        done = asyncio.run(backup_round(s, sessions, now))
        assert done.written, done
        written.append(done.written)
        assert asyncio.run(backup_round(s, sessions, now + timedelta(minutes=5))).skipped == "done"
    kept = sorted(p.name for p in (tmp_path / "repo" / PREFIX).iterdir())
    assert kept == [Path(k).name for k in written[-2:]]
    assert kept[-1] == "vbm-config-20261130T0230Z.vbmcfg"

    blob = (tmp_path / "repo" / PREFIX / kept[-1]).read_bytes()
    target = Settings(data_dir=tmp_path / "new", database_url=f"sqlite:///{tmp_path / 'new' / 'vbm.db'}")
    restored = restore_backup(target, io.BytesIO(blob), PASSPHRASE)
    assert "jobs" in restored.counts


def test_no_passphrase_skips_with_one_alert(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    s = settings(tmp_path, db_url)
    asyncio.run(Repository.init(LocalBackend(str(tmp_path / "repo"))))
    asyncio.run(backup_round(s, sessions, T0))
    for day in (1, 2):
        assert asyncio.run(backup_round(s, sessions, T0 + timedelta(days=day))).skipped == "no passphrase"
    with sessions() as session:
        alerts = list(session.scalars(select(Alert).where(Alert.kind == "config_backup")))
    assert len(alerts) == 1 and "no passphrase configured" in alerts[0].message
    assert not (tmp_path / "repo" / PREFIX).exists()
