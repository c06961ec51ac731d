"""Disk streams: how many disks a mover reads at once, and what production allows.

* Locally, a mover offers `mover.streams` streams. Each VM it works on holds one (the dispatcher
  admitted the VM against the movers' streams, so that one is always there); its other disks
  read in parallel only on streams free at that moment, else one after the other on its own.
* Across movers, each disk stream takes a lease (`shared/catalog/leases.py`) on its datastore,
  host and repository, within `limits.streams_per_*` (0: none). A stream waiting for a lease
  says so (task progress, the run's log) and stays alive: waiting is not stalling.
* Storage latency control: every range read's time to first byte feeds a moving average per
  datastore; above `limits.latency_ms` the datastore's stream limit halves (down to 1), and
  recovers by one a step after reads stay below half the threshold for `RECOVER` seconds. The
  limit lives in the database (`throttles`), so the dispatcher and every mover follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from shared.catalog import leases, runlog
from shared.db.models import Task
from shared.db.work import RunLogLine, Throttle
from shared.runtime.service import Context

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at a lease that is taken
RENEW = 20.0  # seconds between renewals of a held lease (it expires after leases.TTL)
ALPHA = 0.4  # weight of a new read in the latency average
STEP = 3.0  # seconds between two changes of one datastore's limit
RECOVER = 3.0  # seconds below half the threshold before a step up
IDLE = 30.0  # a datastore not read for this long counts as calm (its limit recovers step by step)
BASELINE = 1800.0  # seconds over which the lowest time to first byte is the datastore's usual


@dataclass
class LocalStreams:
    """The mover's own streams: one held by each VM in hand, the rest free for extra disks."""

    total: int
    used: int = 0

    def vm_started(self) -> None:
        self.used += 1

    def vm_ended(self) -> None:
        self.used -= 1

    def try_extra(self) -> bool:
        if self.used < self.total:
            self.used += 1
            return True
        return False

    def release_extra(self) -> None:
        self.used -= 1


@dataclass
class Latency:
    """Per datastore: the moving average of time to first byte above the lowest seen lately (the
    HTTP path's own time, vCenter's proxy included), and the limit it leads to. Decisions are
    shared through the `throttles` row: its `updated_at` is the last change or confirmation by
    any mover, so movers keep one cadence and one halving per step."""

    ctx: Context
    average: dict[str, float] = field(default_factory=dict)  # resource -> seconds
    seen: dict[str, float] = field(default_factory=dict)  # resource -> monotonic time of the last read
    lows: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)  # (time, sample)
    calm_since: dict[str, float] = field(default_factory=dict)

    def observer(self, vcenter: str) -> Callable[[str, float], None]:
        """What one vCenter's DatastoreHTTP tells of each range read (url, time to first byte)."""

        def observe(url: str, seconds: float) -> None:
            store = parse_qs(urlsplit(url).query).get("dsName", [""])[0]
            if store:
                key = leases.datastore(vcenter, store)
                before = self.average.get(key)
                self.average[key] = seconds if before is None else ALPHA * seconds + (1 - ALPHA) * before
                now = time.monotonic()
                self.seen[key] = now
                low = self.lows.setdefault(key, deque())
                while low and (low[-1][1] >= seconds or now - low[0][0] > BASELINE):
                    if low[-1][1] >= seconds:
                        low.pop()
                    else:
                        low.popleft()
                low.append((now, seconds))

        return observe

    def latency(self, key: str) -> float:
        """Seconds above the datastore's lowest time to first byte of the last BASELINE."""
        low = self.lows.get(key)
        return max(0.0, self.average.get(key, 0.0) - (low[0][1] if low else 0.0))

    async def adjust(self, notify: Callable[[str, str, str], None]) -> None:
        """Lower or raise each datastore's limit by what its latency says (once a second)."""
        threshold = self.ctx.settings.limits.latency_ms / 1000
        configured = self.ctx.settings.limits.streams_per_datastore
        if threshold <= 0 or configured <= 0:
            return
        now = time.monotonic()
        for key in list(self.average):
            current, age = await asyncio.to_thread(_limit_now, self.ctx, key, configured)
            if age < STEP:
                continue  # changed or confirmed a moment ago, by this mover or another
            reading = now - self.seen.get(key, 0.0) < IDLE
            latency = self.latency(key) if reading else 0.0
            if not reading and age < IDLE:
                continue  # another mover reads it and keeps the limit: its measure, not ours
            if latency > threshold and current > 1:
                new = max(1, current // 2)
                self.calm_since.pop(key, None)
            elif latency < threshold / 2 and current < configured:
                since = self.calm_since.setdefault(key, now)
                if now - since < RECOVER:
                    continue
                new = current + 1
                self.calm_since[key] = now
            else:
                if latency >= threshold / 2:
                    self.calm_since.pop(key, None)
                if current < configured and reading:
                    await asyncio.to_thread(_touch, self.ctx, key)  # still slow: still meant
                continue
            await asyncio.to_thread(_set_limit, self.ctx, key, new, configured, latency * 1000)
            vcenter, store = key.split(":", 1)[1].split("/", 1)
            how = "slow" if new < current else "recovering"
            message = (
                f"datastore {store} is {how}: {latency * 1000:.0f} ms to first byte above its usual"
                f" (threshold {threshold * 1000:.0f} ms): {new} stream(s) at once, was {current}"
            )
            log.warning("%s", message)
            await asyncio.to_thread(notify, vcenter, store, message)


THROTTLE_STALE = timedelta(minutes=10)  # as the dispatcher: a limit no mover confirms lapses


def _limit_now(ctx: Context, key: str, configured: int) -> tuple[int, float]:
    """The datastore's stream limit now, and seconds since any mover changed or confirmed it."""
    with ctx.sessions() as s:
        row = s.get(Throttle, key)
        now = ctx.clock()
        if row is None or row.updated_at < now - THROTTLE_STALE:
            return configured, float("inf") if row is None else (now - row.updated_at).total_seconds()
        return min(configured, row.limit_now), (now - row.updated_at).total_seconds()


def _touch(ctx: Context, key: str) -> None:
    with ctx.sessions.begin() as s:
        row = s.get(Throttle, key)
        if row is not None:
            row.updated_at = ctx.clock()


def _set_limit(ctx: Context, key: str, limit: int, configured: int, latency_ms: float) -> None:
    with ctx.sessions.begin() as s:
        row = s.get(Throttle, key)
        if limit >= configured:
            if row is not None:
                s.delete(row)
            return
        if row is None:
            row = Throttle(resource=key, limit_now=limit, latency_ms=latency_ms, updated_at=ctx.clock())
            s.add(row)
        row.limit_now, row.latency_ms, row.updated_at = limit, latency_ms, ctx.clock()


def stream_limits(
    ctx: Context, vcenter: str, datastore: str, host: str | None, repository: str
) -> list[tuple[str, int]]:
    """The leases a disk stream needs: (resource, limit) for each limit that is set."""
    limits = ctx.settings.limits
    wanted = []
    if limits.streams_per_datastore:
        key = leases.datastore(vcenter, datastore)
        wanted.append((key, _limit_now(ctx, key, limits.streams_per_datastore)[0]))
    if limits.streams_per_host and host:
        wanted.append((leases.host(vcenter, host), limits.streams_per_host))
    if limits.streams_per_repository:
        wanted.append((leases.repository(repository), limits.streams_per_repository))
    return wanted


class LeasesBusy(Exception):
    """Not every lease was free at once (an extra stream does not wait: the VM's own does)."""


@contextlib.asynccontextmanager
async def leased(
    ctx: Context,
    holder: str,
    wanted: Callable[[], list[tuple[str, int]]],
    waiting: Callable[[str | None], None],
    *,
    wait: bool = True,
) -> AsyncIterator[None]:
    """Hold a lease on every (resource, limit) of `wanted()` for the block; wait (saying for
    what, and asking `wanted()` again each time: a limit may change meanwhile) until each is
    free, or, with `wait=False`, raise LeasesBusy at once. Taken in a fixed order, so two streams
    never wait for each other."""
    held: list[tuple[str, int]] = []
    renewer: asyncio.Task[None] | None = None
    try:
        while True:
            limits = dict(await asyncio.to_thread(wanted))
            have = {resource for resource, _ in held}
            missing = sorted(r for r in limits if r not in have)
            if not missing:
                break
            resource = missing[0]
            slot = await asyncio.to_thread(
                leases.acquire, ctx.sessions, resource, limits[resource], holder, ctx.clock()
            )
            if slot is not None:
                held.append((resource, slot))
                continue
            if not wait:
                raise LeasesBusy(resource)
            kind, _, name = resource.partition(":")
            what = {"ds": "datastore", "host": "host", "repo": "repository"}.get(kind, kind)
            waiting(f"waiting for a stream on {what} {name.split('/', 1)[-1]} ({limits[resource]} at once)")
            await asyncio.sleep(POLL)
        waiting(None)
        renewer = asyncio.create_task(_renew(ctx, holder, held))
        yield
    finally:
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        for resource, slot in held:
            with contextlib.suppress(Exception):  # an unreleased lease expires on its own
                await asyncio.to_thread(leases.release, ctx.sessions, resource, slot, holder)


async def _renew(ctx: Context, holder: str, held: list[tuple[str, int]]) -> None:
    while True:
        await asyncio.sleep(RENEW)
        for resource, slot in held:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(leases.renew, ctx.sessions, resource, slot, holder, ctx.clock())


def note_throttle(ctx: Context, vcenter: str, datastore: str, message: str, now: datetime) -> None:
    """Tell every run transferring from the datastore (its log) that it was slowed or sped up;
    a run hears of the same datastore and direction at most once a minute."""
    head = message.split(":", 1)[0]  # "datastore ds1 is slow"
    with ctx.sessions.begin() as s:
        tasks = s.scalars(
            select(Task).where(Task.phase == "transfer", Task.state == "running", Task.vcenter == vcenter)
        ).all()
        for run_id in sorted({t.run_id for t in tasks if datastore in (t.datastores or [])}):
            last = s.scalar(
                select(func.max(RunLogLine.at)).where(
                    RunLogLine.run_id == run_id, RunLogLine.message.startswith(head)
                )
            )
            if last is None or last < now - timedelta(minutes=1):
                runlog.write(s, run_id, message, now, level="warning")
