"""The scheduler's loop: run planner rounds on time, and soon after jobs change.

A round (`Planner.tick`, in a thread) re-reads the jobs and fires what is due; the loop then
sleeps until the next slot, but never longer than `poll` seconds, so an edited job, a wall-clock
jump or a machine resumed from suspend is noticed within `poll` seconds. A message on
`vbm.live.jobs.changed` (the gateway may send one after an edit) starts a round at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from services.scheduler.planner import Planner

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
MIN_SLEEP = 0.05
# Best effort, like every live subject: polling alone is enough for correctness.


class SchedulerLoop:
    def __init__(
        self,
        planner: Planner,
        kick: Callable[[], None],
        stop: asyncio.Event,
        *,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.planner = planner
        self.kick = kick
        self.stop = stop
        self.poll = poll
        self.wake = asyncio.Event()

    async def on_jobs_changed(self, _msg: object = None) -> None:
        self.wake.set()

    async def run(self) -> None:
        watching = -1
        while not self.stop.is_set():
            self.wake.clear()
            try:
                created = await asyncio.to_thread(self.planner.tick)
            except SQLAlchemyError as exc:  # database away or busy: the next round retries
                log.warning("scheduler round failed, retrying in %.0f s: %s", self.poll, exc)
                created = []
            else:
                if len(self.planner.plans) != watching:
                    watching = len(self.planner.plans)
                    log.info("scheduler watching %d scheduled jobs", watching)
            if created:
                self.kick()  # publish the staged JobRequested events now, not at the next poll
            await self._sleep(self._delay())

    def _delay(self) -> float:
        wake = self.planner.next_wake()
        if wake is None:
            return self.poll
        until = (wake - self.planner.now()).total_seconds()
        return max(MIN_SLEEP, min(self.poll, until))

    async def _sleep(self, seconds: float) -> None:
        stopping = asyncio.ensure_future(self.stop.wait())
        woken = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait([stopping, woken], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopping, woken):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
