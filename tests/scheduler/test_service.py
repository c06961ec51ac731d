"""The scheduler loop in-process, and `python -m services.scheduler` as a real process."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.scheduler.planner import Planner
from services.scheduler.service import SchedulerLoop
from shared.contracts import STREAM_NAME, JobRequested, Subject
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Run
from shared.model.schedules import run_id_for
from tests.plugins.nats import NatsServer
from tests.plugins.procs import ManagedProcess
from tests.scheduler.conftest import EVERY_10, T0, FakeClock, add_job, slots_run, start_runs

ROOT = Path(__file__).resolve().parents[2]


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_loop_picks_up_new_jobs_and_kicks_the_relay(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    kicks: list[int] = []
    stop = asyncio.Event()
    loop = SchedulerLoop(Planner(sessions, clock), lambda: kicks.append(1), stop, poll=0.2)
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.sleep(0.3)
        add_job(sessions, schedule=EVERY_10, last_slot=T0 - 10 * timedelta(minutes=1))
        await eventually(lambda: slots_run(sessions) == [T0], 5, "the new job's slot")
        await eventually(lambda: kicks == [1], 1, "a relay kick")
        start_runs(sessions)
        # A jobs-changed message starts a round at once, however long the poll.
        loop.poll = 60
        await asyncio.sleep(0.3)  # the loop is now asleep for up to 60 s
        clock.advance(minutes=10)
        await loop.on_jobs_changed()
        await eventually(lambda: slots_run(sessions) == [T0, T0 + timedelta(minutes=10)], 5, "a round")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


class FlakyPlanner(Planner):
    """The database fails the first round."""

    def __init__(self, sessions: sessionmaker[Session], clock: FakeClock) -> None:
        super().__init__(sessions, clock)
        self.rounds = 0

    def tick(self) -> list[str]:
        self.rounds += 1
        if self.rounds == 1:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return super().tick()


async def test_a_failed_round_is_retried(
    sessions: sessionmaker[Session], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    add_job(sessions, schedule=EVERY_10, last_slot=T0 - timedelta(minutes=10))
    stop = asyncio.Event()
    planner = FlakyPlanner(sessions, clock)
    task = asyncio.create_task(SchedulerLoop(planner, lambda: None, stop, poll=0.1).run())
    try:
        await eventually(lambda: slots_run(sessions) == [T0], 5, "the retried round")
        assert "scheduler round failed, retrying" in caplog.text
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def count_runs(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Run)) or 0


async def stream_events(url: str) -> list[tuple[str, JobRequested]]:
    """Every JobRequested in the stream now, with its message id."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM_NAME, subjects_filter=Subject.JOB_REQUESTED.value)
        if not info.state.messages:
            return []
        sub = await js.subscribe(Subject.JOB_REQUESTED.value, ordered_consumer=True)
        out = []
        try:
            while True:
                msg = await sub.next_msg(timeout=5)
                event = JobRequested.model_validate_json(msg.data)
                out.append(((msg.headers or {}).get("Nats-Msg-Id", ""), event))
                if msg.metadata.num_pending == 0:
                    return out
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def scheduler_process(tmp_path: Path, nats_url: str, db_url: str, name: str) -> ManagedProcess:
    env = {
        "VBM_NATS__URL": nats_url,
        "VBM_DATA_DIR": str(tmp_path / "data"),
        "VBM_DATABASE_URL": db_url,
        "VBM_HEARTBEAT_INTERVAL": "1",
        "VBM_SHUTDOWN_GRACE": "5",
    }
    return ManagedProcess(
        [sys.executable, "-m", "services.scheduler"],
        name=name,
        cwd=ROOT,
        env=env,
        log_path=tmp_path / f"{name}.log",
    )


@pytest.mark.slow
async def test_a_missed_slot_runs_once_across_a_kill_9(nats_server: NatsServer, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'vbm.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    every_minute = {"kind": "interval", "every_minutes": 1}
    # Three slots missed (minute-2, minute-1, minute): they coalesce into one run of the newest.
    add_job(sessions, "job-1", every_minute, last_slot=minute - timedelta(minutes=3))
    first = scheduler_process(tmp_path, nats_server.url, db_url, "scheduler-1").start()
    try:
        await eventually(lambda: count_runs(sessions) >= 1 or not first.alive, 30, "the caught-up run")
        assert first.alive, first.log_tail()
        slot = slots_run(sessions)[0]
        assert slot in (minute, minute + timedelta(minutes=1))  # the minute may turn meanwhile
        run_id = run_id_for("job-1", slot, slot)
        events: list[tuple[str, JobRequested]] = []

        async def published() -> bool:
            events[:] = await stream_events(nats_server.url)
            return any(e.run_id == run_id for _, e in events)

        deadline = time.monotonic() + 10
        while not await published():
            assert time.monotonic() < deadline, f"no JobRequested for {run_id} in {STREAM_NAME}"
        msg_id, event = next((m, e) for m, e in events if e.run_id == run_id)
        assert msg_id == f"job.requested:{run_id}"
        assert (event.job_id, event.trigger, event.slot) == ("job-1", "schedule", slot)
        first.kill()

        second = scheduler_process(tmp_path, nats_server.url, db_url, "scheduler-2").start()
        try:
            log = tmp_path / "scheduler-2.log"
            await eventually(
                lambda: "scheduler watching 1 scheduled jobs" in log.read_text() or not second.alive,
                30,
                "the restarted scheduler's first round",
            )
            assert second.alive, second.log_tail()
            await asyncio.sleep(1.5)  # a relay round too
            got = slots_run(sessions)
            assert got[0] == slot and all(s > slot for s in got[1:]), got  # nothing older, nothing twice
            events = await stream_events(nats_server.url)
            assert sorted(e.run_id for _, e in events) == sorted(run_id_for("job-1", s, s) for s in got)
            assert second.stop() == 0, second.log_tail()
        finally:
            second.kill()
    finally:
        first.kill()
        engine.dispose()
