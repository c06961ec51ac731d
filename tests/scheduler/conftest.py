"""Scheduler test helpers: a database with the current schema, a clock tests move, and jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.scheduler.planner import aware
from shared.db.models import Job, Outbox, Run

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
DAILY_0230 = {"kind": "preset", "preset": "daily", "at": "02:30", "timezone": "Europe/Berlin"}
EVERY_10 = {"kind": "interval", "every_minutes": 10}


class FakeClock:
    """A clock that stands still until the test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def add_job(
    sessions: sessionmaker[Session],
    job_id: str = "job-1",
    schedule: dict[str, Any] | None = None,
    *,
    created: datetime = T0 - timedelta(days=30),
    last_slot: datetime | None = None,
    enabled: bool = True,
) -> None:
    with sessions.begin() as s:
        s.add(
            Job(
                id=job_id,
                name=job_id,
                vcenter="vc1",
                vms=[{"moref": "vm-1"}],
                schedule=schedule,
                options={},
                repository="/repo",
                retention={},
                enabled=enabled,
                last_slot=last_slot,
                created_at=created,
                updated_at=created,
            )
        )


def edit_job(sessions: sessionmaker[Session], job_id: str, **values: Any) -> None:
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        assert job is not None
        for key, value in values.items():
            setattr(job, key, value)


def start_runs(sessions: sessionmaker[Session]) -> None:
    """What the dispatcher does: the queued runs start (a slot that comes while a run of its job
    still waits to start joins that run instead of queuing another)."""
    with sessions.begin() as s:
        for run in s.scalars(select(Run).where(Run.state == "queued")):
            run.state, run.started_at = "running", T0


def runs(sessions: sessionmaker[Session], job_id: str = "job-1") -> list[tuple[str, str, datetime | None]]:
    """(id, trigger, slot) of the job's runs, oldest slot first; slots UTC-aware."""
    with sessions() as s:
        rows = s.execute(select(Run.id, Run.trigger, Run.slot).where(Run.job_id == job_id)).all()
    out = [(r[0], r[1], None if r[2] is None else aware(r[2])) for r in rows]
    return sorted(out, key=lambda r: (r[2] is None, r[2] or T0, r[0]))


def slots_run(sessions: sessionmaker[Session], job_id: str = "job-1") -> list[datetime]:
    return [slot for _, trigger, slot in runs(sessions, job_id) if trigger == "schedule" and slot]


def last_slot(sessions: sessionmaker[Session], job_id: str = "job-1") -> datetime | None:
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return None if job.last_slot is None else aware(job.last_slot)


def staged(sessions: sessionmaker[Session]) -> list[str]:
    """Message ids of the events in the outbox, in order."""
    with sessions() as s:
        return list(s.scalars(select(Outbox.msg_id).order_by(Outbox.id)))
