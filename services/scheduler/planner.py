"""The scheduler's logic: which slot of which job is due, and firing it exactly once.

The database is the only state. A job's *floor* is the earliest instant a slot of it may still
run: just after `jobs.last_slot`, or its creation. A job is due when its schedule has a slot in
`[floor, now]`; the newest such slot fires (older ones missed while nothing ran are coalesced
into it) and becomes the new `last_slot`, in the transaction that creates the run. So a restart,
a second scheduler or a double fire cannot run a slot twice, and downtime costs at most a delay.

`Planner` is synchronous and takes its clock as an argument, so tests freeze and advance time;
the service (`service.py`) calls it from a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import audit
from shared.catalog.runs import request_run
from shared.clock import iso
from shared.db.models import Job
from shared.model.audit import system
from shared.model.schedules import Schedule
from shared.model.slots import TICK, is_slot, newest_slot, next_slot
from shared.observe import tracing

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

log = logging.getLogger(__name__)


def aware(value: datetime) -> datetime:
    """UTC-aware: SQLite hands back naive datetimes (stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def floor_of(last_slot: datetime | None, created_at: datetime) -> datetime:
    """The earliest slot a job may still run: after its last scheduled slot, not before it existed."""
    created = aware(created_at)
    return created if last_slot is None else max(aware(last_slot) + TICK, created)


@dataclass(frozen=True)
class Due:
    job_id: str
    slot: datetime


@dataclass
class Plan:
    """What the planner knows of one enabled, scheduled job."""

    raw: dict[str, Any]
    schedule: Schedule
    floor: datetime
    next_slot: datetime


class Planner:
    """Plans from the `jobs` table; `tick()` is one round: refresh, then fire what is due."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.sessions = sessions
        self.clock = clock
        self.plans: dict[str, Plan] = {}
        self._bad: set[tuple[str, str]] = set()

    def now(self) -> datetime:
        return aware(self.clock())

    def refresh(self) -> None:
        """Re-read every job: picks up created, edited, disabled, deleted jobs and new last slots."""
        with self.sessions() as s:
            rows = s.execute(select(Job.id, Job.schedule, Job.enabled, Job.last_slot, Job.created_at)).all()
        plans: dict[str, Plan] = {}
        for job_id, raw, enabled, last_slot, created_at in rows:
            if not enabled or raw is None:
                continue
            plan = self._plan(job_id, raw, floor_of(last_slot, created_at))
            if plan is not None:
                plans[job_id] = plan
        self.plans = plans

    def _plan(self, job_id: str, raw: dict[str, Any], floor: datetime) -> Plan | None:
        old = self.plans.get(job_id)
        if old is not None and old.raw == raw and old.floor == floor:
            return old
        if (job_id, repr(raw)) in self._bad:
            return None
        schedule = old.schedule if old is not None and old.raw == raw else self._parse(job_id, raw)
        if schedule is None:
            return None
        try:
            nxt = next_slot(schedule, floor - TICK)
        except (AssertionError, ValueError, OverflowError):  # e.g. cron "0 0 30 2 *" never fires
            self._warn_once(job_id, raw, "never fires")
            return None
        return Plan(raw=raw, schedule=schedule, floor=floor, next_slot=nxt)

    def _parse(self, job_id: str, raw: dict[str, Any] | None) -> Schedule | None:
        if raw is None:
            return None
        try:
            return Schedule.model_validate(raw)
        except ValidationError as exc:
            self._warn_once(job_id, raw, f"is not valid ({exc.errors()[0]['msg']})")
            return None

    def _warn_once(self, job_id: str, raw: dict[str, Any], problem: str) -> None:
        key = (job_id, repr(raw))
        if key not in self._bad:
            self._bad.add(key)
            log.warning("job %s: schedule %s %s; not scheduling it until it is fixed", job_id, raw, problem)

    @staticmethod
    def _fits(schedule: Schedule, slot: datetime, created_at: datetime, now: datetime) -> bool:
        if not aware(created_at) <= slot <= now:
            return False
        try:
            return is_slot(schedule, slot)
        except (AssertionError, ValueError, OverflowError):
            return False

    def due(self, now: datetime) -> list[Due]:
        """The slot each job must run now: its newest slot in `[floor, now]`, if any."""
        out = []
        for job_id, plan in sorted(self.plans.items(), key=lambda kv: kv[1].next_slot):
            if plan.next_slot <= now:
                slot = newest_slot(plan.schedule, now, plan.floor)
                if slot is not None:
                    out.append(Due(job_id, slot))
        return out

    def next_wake(self) -> datetime | None:
        """When the next slot of any known job comes (None: nothing is scheduled)."""
        return min((p.next_slot for p in self.plans.values()), default=None)

    def fire(self, job_id: str, slot: datetime) -> str | None:
        """Run `slot` of the job unless it ran already; returns the id of the run created.

        One transaction. It starts by moving `last_slot` forward to `slot` only if the job is
        enabled and its last slot is older (a compare-and-set that takes the row lock on
        PostgreSQL and the write lock on SQLite first, so a second scheduler waits, then finds
        nothing to do); then checks the slot still belongs to the job's current schedule, and
        `request_run`s it (which does nothing if that run exists). Otherwise it rolls back.
        A manual run never touches `last_slot`, so it changes nothing here.
        """
        now = self.now()
        with self.sessions() as s:
            advance = (
                update(Job)
                .where(Job.id == job_id, Job.enabled.is_(True))
                .where(or_(Job.last_slot.is_(None), Job.last_slot < slot))
                .values(last_slot=slot)
                .execution_options(synchronize_session=False)
            )
            moved = cast("CursorResult[Any]", s.execute(advance)).rowcount
            job = s.get(Job, job_id) if moved else None
            schedule = None if job is None else self._parse(job_id, job.schedule)
            if job is None or schedule is None or not self._fits(schedule, slot, job.created_at, now):
                # Ran already (another scheduler), or the job changed since it was planned.
                self.plans.pop(job_id, None)
                return None
            run = request_run(s, job, trigger="schedule", now=now, slot=slot)
            s.commit()
        plan = self.plans.get(job_id)
        if plan is not None:
            plan.floor = slot + TICK
            plan.next_slot = next_slot(schedule, slot)
        late = (now - slot).total_seconds()
        if run is None:
            log.info(
                "job %s: slot %s: no new run (it ran already, or joined a run still waiting to start)",
                job_id,
                slot.isoformat(),
            )
            return None
        audit.try_append(
            self.sessions, actor=system("scheduler"), action="run.scheduled",
            target=f"job:{job_id} run:{run.id}", params={"slot": iso(slot)}, at=now,
        )  # fmt: skip
        log.info(
            "job %s: run %s requested for slot %s%s",
            job_id,
            run.id,
            slot.isoformat(),
            f" (caught up {late:.0f} s late)" if late > 60 else "",
        )
        return run.id

    def tick(self) -> list[str]:
        """One round: refresh from the database, then fire every due slot; the runs created."""
        self.refresh()
        created = []
        for due in self.due(self.now()):
            # a scheduled run's trace starts here (docs/design.md, "Traces")
            with tracing.span("scheduler slot", job=due.job_id, slot=iso(due.slot)):
                run_id = self.fire(due.job_id, due.slot)
                tracing.annotate(run_id=run_id)
            if run_id is not None:
                created.append(run_id)
        return created
