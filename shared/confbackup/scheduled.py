"""The daily configuration backup (the scheduler runs `backup_round` about once a minute).

Once a day at `config_backup.at` (UTC) one scheduler (the one that claims the day's slot in the
`meta` table, compare-and-set, so several schedulers write one file) writes a configuration backup
to `<location>/config-backups/vbm-config-<UTC time>.vbmcfg` through the repository's backend and
keeps the newest `keep` there. `location` defaults to the default repository; it must be a
repository already (vbm writes nowhere it did not make), else the round waits for the first backup.
With no passphrase configured the round is skipped with a warning and one alert; a failure raises
an alert naming the day. The first round after install only records the slot: the first file is
written at the next `at`.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog.alerts import Severity, raise_alert
from shared.confbackup.archive import write_backup
from shared.confbackup.sealed import SealError
from shared.db.work import Meta
from shared.repo.errors import NotARepository, RepoError
from shared.repo.locations import Credentials, opened
from shared.settings import ConfigBackupSettings, Settings

log = logging.getLogger(__name__)

PREFIX = "config-backups/"
META_KEY = "config_backup.last_slot"


@dataclass(frozen=True)
class Outcome:
    slot: datetime | None
    written: str | None = None
    removed: tuple[str, ...] = ()
    skipped: str | None = None


def newest_slot(at: str, now: datetime) -> datetime:
    hour, minute = (int(p) for p in at.split(":"))
    today = datetime.combine(now.astimezone(UTC).date(), time(hour, minute), tzinfo=UTC)
    return today if today <= now else today - timedelta(days=1)


def passphrase_of(cfg: ConfigBackupSettings) -> str | None:
    if cfg.passphrase is not None and cfg.passphrase.get_secret_value():  # compose passes "" when unset
        return cfg.passphrase.get_secret_value()
    if cfg.passphrase_file is not None:
        try:
            lines = cfg.passphrase_file.read_text().splitlines()
        except OSError:
            return None
        return lines[0] if lines and lines[0] else None
    return None


def claim(sessions: sessionmaker[Session], slot: datetime) -> bool | None:
    """True: this process does `slot`; False: done or taken; None: the first round (recorded)."""
    value = slot.isoformat()
    with sessions.begin() as s:
        last = s.scalar(select(Meta.value).where(Meta.key == META_KEY))
        if last is None:
            try:
                with s.begin_nested():
                    s.execute(insert(Meta).values(key=META_KEY, value=value))
            except IntegrityError:
                return False
            return None
        if last >= value:
            return False
        done = s.execute(update(Meta).where(Meta.key == META_KEY, Meta.value == last).values(value=value))
        return bool(getattr(done, "rowcount", 0) == 1)


async def backup_round(settings: Settings, sessions: sessionmaker[Session], now: datetime) -> Outcome:
    cfg = settings.config_backup
    if not cfg.enabled:
        return Outcome(None, skipped="disabled")
    slot = newest_slot(cfg.at, now)
    claimed = await asyncio.to_thread(claim, sessions, slot)
    if claimed is None:
        return Outcome(slot, skipped="first round: the first backup is at the next slot")
    if not claimed:
        return Outcome(slot, skipped="done")
    phrase = passphrase_of(cfg)
    if phrase is None:
        why = (
            "no passphrase configured (VBM_CONFIG_BACKUP__PASSPHRASE or config_backup.passphrase_file):"
            " vbm's daily configuration backup is not written"
        )
        log.warning(why)
        await asyncio.to_thread(_alert, sessions, "config-backup:no-passphrase", "warning", why, now)
        return Outcome(slot, skipped="no passphrase")
    location = cfg.location or settings.repository_location
    try:
        return await _write(settings, location, phrase, slot, cfg.keep)
    except NotARepository:
        log.warning("no repository at %s yet: the configuration backup waits for the first backup", location)
        return Outcome(slot, skipped="not a repository yet")
    except (RepoError, OSError, ValueError, SealError, SQLAlchemyError) as exc:
        why = f"the configuration backup of {slot.date()} to {location} failed: {exc}"
        log.error(why)
        await asyncio.to_thread(_alert, sessions, f"config-backup:{slot.date()}", "error", why, now)
        return Outcome(slot, skipped="failed")


async def _write(settings: Settings, location: str, phrase: str, slot: datetime, keep: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="vbm-config-backup-") as tmp:
        path = Path(tmp) / "backup"

        def make() -> bytes:
            with path.open("wb") as fh:
                write_backup(settings, fh, phrase)
            return path.read_bytes()  # one object: a configuration database is small

        data = await asyncio.to_thread(make)
    key = f"{PREFIX}vbm-config-{slot.strftime('%Y%m%dT%H%MZ')}.vbmcfg"
    async with opened(location, Credentials.of(settings)) as repo:
        await repo.backend.put_if_absent(key, data, durable=True)
        names = sorted([o.key async for o in repo.backend.list(PREFIX) if o.key.endswith(".vbmcfg")])
        removed = names[:-keep] if len(names) > keep else []
        for old in removed:
            try:
                await repo.backend.delete(old)
            except (RepoError, OSError) as exc:  # e.g. an immutable bucket: kept, said
                log.warning("the old configuration backup %s stays: %s", old, exc)
    log.info("configuration backup written to %s %s (%d bytes)", location, key, len(data))
    return Outcome(slot, written=key, removed=tuple(removed))


def _alert(
    sessions: sessionmaker[Session], key: str, severity: Severity, message: str, now: datetime
) -> None:
    with sessions.begin() as s:
        raise_alert(s, key=key, kind="config_backup", severity=severity, message=message, now=now)
