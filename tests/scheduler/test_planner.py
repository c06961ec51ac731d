"""The planner against a real database (SQLite and PostgreSQL), with a clock the tests move."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from services.scheduler.planner import Due, Planner
from shared.catalog import runlog
from shared.catalog.runs import request_run
from shared.db.models import Job
from tests.scheduler.conftest import (
    DAILY_0230,
    EVERY_10,
    T0,
    FakeClock,
    add_job,
    edit_job,
    last_slot,
    runs,
    slots_run,
    staged,
    start_runs,
)

M = timedelta(minutes=1)


def test_a_due_slot_runs_once_with_a_slot_derived_id(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * M)
    planner = Planner(sessions, clock)
    assert planner.tick() == ["job-1-20261126T090000Z"]
    assert planner.tick() == []
    assert runs(sessions) == [("job-1-20261126T090000Z", "schedule", T0)]
    assert staged(sessions) == ["job.requested:job-1-20261126T090000Z"]
    assert last_slot(sessions) == T0
    assert planner.next_wake() == T0 + 10 * M
    start_runs(sessions)

    clock.advance(minutes=9, seconds=59)
    assert planner.tick() == []
    clock.advance(seconds=1)
    assert planner.tick() == ["job-1-20261126T091000Z"]
    assert slots_run(sessions) == [T0, T0 + 10 * M]


def test_missed_slots_coalesce_into_one_run_of_the_newest(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    # Down since before 22 Nov 02:30 Berlin: four daily slots missed, the newest is 26 Nov 01:30 UTC.
    add_job(sessions, schedule=DAILY_0230, last_slot=datetime(2026, 11, 22, 1, 30, tzinfo=UTC))
    add_job(sessions, "job-2", EVERY_10, last_slot=T0 - timedelta(days=400))
    planner = Planner(sessions, clock)
    assert sorted(planner.tick()) == ["job-1-20261126T013000Z", "job-2-20261126T090000Z"]
    assert slots_run(sessions) == [datetime(2026, 11, 26, 1, 30, tzinfo=UTC)]
    assert slots_run(sessions, "job-2") == [T0]
    # A restarted scheduler (a new planner, same database) finds nothing left to do.
    clock.advance(minutes=5)
    assert Planner(sessions, clock).tick() == []
    assert planner.tick() == []
    assert len(staged(sessions)) == 2


def test_a_new_job_runs_no_slot_from_before_it_existed(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    add_job(sessions, schedule=EVERY_10, created=T0 + M)
    add_job(sessions, "job-2", EVERY_10, created=T0 - M)
    planner = Planner(sessions, clock)
    assert planner.tick() == ["job-2-20261126T090000Z"]
    start_runs(sessions)
    clock.advance(minutes=10)
    assert sorted(planner.tick()) == ["job-1-20261126T091000Z", "job-2-20261126T091000Z"]


def test_disabled_and_unscheduled_jobs_do_not_run(sessions: sessionmaker[Session], clock: FakeClock) -> None:
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 30 * M, enabled=False)
    add_job(sessions, "job-2", None, created=T0 - timedelta(days=3))
    planner = Planner(sessions, clock)
    assert planner.tick() == [] and planner.next_wake() is None
    # Enabled again: like a scheduler that was down, it catches up the newest slot once.
    clock.advance(minutes=25)
    edit_job(sessions, "job-1", enabled=True, updated_at=clock.now)
    assert planner.tick() == ["job-1-20261126T092000Z"]
    # Disabled between planning and firing: the transaction sees it and does nothing.
    clock.advance(minutes=10)
    planner.refresh()
    assert planner.due(clock.now) == [Due("job-1", T0 + 30 * M)]
    edit_job(sessions, "job-1", enabled=False)
    assert planner.fire("job-1", T0 + 30 * M) is None
    assert slots_run(sessions) == [T0 + 20 * M] and last_slot(sessions) == T0 + 20 * M


def test_an_edited_schedule_is_used_at_once(sessions: sessionmaker[Session], clock: FakeClock) -> None:
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * M)
    planner = Planner(sessions, clock)
    assert planner.tick() == ["job-1-20261126T090000Z"]
    start_runs(sessions)
    edit_job(sessions, "job-1", schedule={"kind": "interval", "every_minutes": 3})
    clock.advance(minutes=3)
    assert planner.tick() == ["job-1-20261126T090300Z"]
    # Edited between planning and firing: a slot of the old schedule is refused.
    clock.advance(minutes=3)
    planner.refresh()
    edit_job(sessions, "job-1", schedule=DAILY_0230)
    assert planner.fire("job-1", T0 + 6 * M) is None
    assert planner.tick() == []
    assert planner.next_wake() == datetime(2026, 11, 27, 1, 30, tzinfo=UTC)
    # Deleted: forgotten.
    with sessions.begin() as s:
        s.execute(delete(Job))
    clock.advance(days=1)
    assert planner.tick() == [] and planner.plans == {}


def test_a_manual_run_does_not_disturb_the_schedule(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    add_job(sessions, schedule=EVERY_10, last_slot=T0)
    planner = Planner(sessions, clock)
    assert planner.tick() == []
    clock.advance(minutes=4)
    with sessions.begin() as s:
        job = s.get(Job, "job-1")
        assert job is not None
        manual = request_run(s, job, trigger="api", now=clock.now)
        assert manual is not None
    start_runs(sessions)
    assert last_slot(sessions) == T0
    assert planner.tick() == []
    clock.advance(minutes=6)
    assert planner.tick() == ["job-1-20261126T091000Z"]
    assert [r[1] for r in runs(sessions)] == ["schedule", "api"]


def test_a_slot_that_ran_already_is_not_run_again(sessions: sessionmaker[Session], clock: FakeClock) -> None:
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * M)
    planner = Planner(sessions, clock)
    assert planner.fire("job-1", T0) == "job-1-20261126T090000Z"
    assert planner.fire("job-1", T0) is None  # a double fire
    assert planner.fire("job-1", T0 - 10 * M) is None  # older than the last slot
    assert planner.fire("job-1", T0 + 10 * M) is None  # in the future
    # The run exists but last_slot lags (e.g. restored database): the slot is not run twice.
    edit_job(sessions, "job-1", last_slot=T0 - 10 * M)
    assert planner.tick() == []
    assert last_slot(sessions) == T0 and len(staged(sessions)) == 1


def test_wall_clock_jumps(sessions: sessionmaker[Session], clock: FakeClock) -> None:
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * M)
    planner = Planner(sessions, clock)
    assert planner.tick() == ["job-1-20261126T090000Z"]
    start_runs(sessions)
    clock.advance(hours=-2)  # back: nothing re-runs
    assert planner.tick() == []
    clock.advance(hours=2, minutes=10)
    assert planner.tick() == ["job-1-20261126T091000Z"]
    start_runs(sessions)
    clock.advance(hours=5, minutes=5)  # forward (a suspended machine): one run, the newest slot
    assert planner.tick() == ["job-1-20261126T141000Z"]
    assert slots_run(sessions) == [T0, T0 + 10 * M, T0 + timedelta(hours=5, minutes=10)]


def test_a_broken_schedule_is_skipped_with_one_warning(
    sessions: sessionmaker[Session], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    add_job(sessions, "job-bad", {"kind": "interval"}, last_slot=T0 - timedelta(days=1))
    add_job(sessions, "job-never", {"kind": "cron", "cron": "0 0 30 2 *"})
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * M)
    planner = Planner(sessions, clock)
    with caplog.at_level(logging.WARNING, logger="services.scheduler.planner"):
        assert planner.tick() == ["job-1-20261126T090000Z"]
        assert planner.tick() == []
    warned = sorted(r.getMessage() for r in caplog.records)
    assert len(warned) == 2, warned
    assert warned[0].startswith("job job-bad: schedule") and "is not valid" in warned[0]
    assert warned[1].startswith("job job-never: schedule") and "never fires" in warned[1]


def test_a_slot_joins_a_run_of_its_job_that_still_waits_to_start(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    """A job whose runs take longer than its interval does not pile up runs: a slot that comes
    while one still waits to start joins it (its log says so); once it has started, the next slot
    queues one run behind it."""
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * M)
    planner = Planner(sessions, clock)
    assert planner.tick() == ["job-1-20261126T090000Z"]
    clock.advance(minutes=10)
    assert planner.tick() == []
    assert slots_run(sessions) == [T0] and last_slot(sessions) == T0 + 10 * M
    with sessions() as s:
        said = [line["message"] for line in runlog.lines(s, "job-1-20261126T090000Z")]
    assert said == ["the slot of 2026-11-26 09:10 UTC joins this run"]
    start_runs(sessions)
    clock.advance(minutes=10)
    assert planner.tick() == ["job-1-20261126T092000Z"]
    clock.advance(minutes=10)
    assert planner.tick() == []  # joins the 09:20 run, which waits behind the running one
    assert slots_run(sessions) == [T0, T0 + 20 * M]


def test_a_scheduled_run_is_in_the_audit_log(sessions: sessionmaker[Session], clock: FakeClock) -> None:
    from shared.catalog.audit_chain import verify
    from shared.db.audit import AuditRecord

    add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * M)
    Planner(sessions, clock).tick()
    with sessions() as s:
        [rec] = s.query(AuditRecord).all()
        assert (rec.actor, rec.action, rec.target) == (
            "system:scheduler",
            "run.scheduled",
            "job:job-1 run:job-1-20261126T090000Z",
        )
        assert rec.at == T0 and verify(s).ok
