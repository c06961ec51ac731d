"""Two schedulers on one database (two engines, as two processes would have): each slot runs once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select, update

from services.scheduler.planner import Planner
from shared.catalog.runs import request_run
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Job, Outbox, Run
from tests.scheduler.conftest import EVERY_10, T0, FakeClock, add_job

JOBS = 12
ROUNDS = 4


def test_two_schedulers_race_and_each_slot_runs_once(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(2)]
    upgrade(engines[0])
    sessions = [make_sessionmaker(e) for e in engines]
    for n in range(JOBS):  # every job has missed slots, so both planners fire them all at once
        add_job(sessions[0], f"job-{n}", EVERY_10, last_slot=T0 - timedelta(hours=n + 1))
    clock = FakeClock()
    planners = [Planner(s, clock) for s in sessions]
    created: list[str] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            for _ in range(ROUNDS):
                start = threading.Barrier(2)

                def round_(planner: Planner, start: threading.Barrier = start) -> list[str]:
                    planner.refresh()
                    due = planner.due(clock.now)
                    start.wait(timeout=10)
                    return [r for d in due if (r := planner.fire(d.job_id, d.slot)) is not None]

                for got in pool.map(round_, planners):
                    created += got
                with sessions[0].begin() as s:  # the runs ran (a slot waiting behind one would join it)
                    s.execute(update(Run).values(state="succeeded", started_at=clock.now))
                clock.advance(minutes=10)
        assert len(created) == len(set(created)) == JOBS * ROUNDS
        with sessions[0]() as s:
            assert s.scalar(select(func.count()).select_from(Run)) == JOBS * ROUNDS
            assert s.scalar(select(func.count()).select_from(Outbox)) == JOBS * ROUNDS
            slots = s.execute(select(Run.job_id, Run.slot)).all()
        assert len(set(slots)) == JOBS * ROUNDS
    finally:
        for engine in engines:
            engine.dispose()


def test_request_run_race_without_the_job_lock_on_postgresql(postgres_url: str) -> None:
    """The planner locks the job row; request_run alone must still create one run per slot."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    add_job(sessions, "job-1", EVERY_10)
    start = threading.Barrier(2)

    def request() -> str | None:
        with sessions.begin() as s:
            job = s.get(Job, "job-1")
            assert job is not None
            start.wait(timeout=10)
            run = request_run(s, job, trigger="schedule", now=T0, slot=T0)
            return None if run is None else run.id

    try:
        with ThreadPoolExecutor(2) as pool:
            got = [f.result() for f in [pool.submit(request) for _ in range(2)]]
        assert sorted(got, key=str) == [None, "job-1-20261126T090000Z"]
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(Outbox)) == 1
    finally:
        engine.dispose()
