"""The scheduler's daily upkeep: the audit log is pruned once a day, and not when it is off."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.scheduler import upkeep
from shared.catalog import audit
from shared.catalog.audit_chain import PRUNE, verify
from shared.db.audit import AuditRecord
from shared.settings import Settings

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def _old_records(sessions: sessionmaker[Session]) -> None:
    for i in range(3):
        audit.append(
            sessions, actor="alice", action="test", target=f"t:{i}", at=NOW - timedelta(days=500 - i)
        )


def _prunes(sessions: sessionmaker[Session]) -> list[AuditRecord]:
    with sessions() as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.action == PRUNE)))


@pytest.mark.parametrize("auto", [True, False])
async def test_the_audit_log_is_pruned_once_a_day(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, auto: bool
) -> None:
    monkeypatch.setattr(upkeep, "FIRST_CHECK", 0.01)
    monkeypatch.setattr(upkeep, "CHECK_EVERY", 0.01)  # checked often: still pruned once a day
    _old_records(sessions)
    settings = Settings(audit={"retention_days": 400, "auto_prune": auto})
    ctx = SimpleNamespace(settings=settings, sessions=sessions, stop=asyncio.Event(), clock=lambda: NOW)
    task = asyncio.create_task(upkeep.audit_prune_loop(ctx))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    ctx.stop.set()
    await asyncio.wait_for(task, 5)
    prunes = _prunes(sessions)
    if not auto:
        assert prunes == []
        return
    assert len(prunes) == 1 and prunes[0].actor == "system:scheduler"
    with sessions() as s:
        v = verify(s)
    assert v.ok and v.count == 2 and v.first_id == 3  # the newest old record stays, as the anchor
