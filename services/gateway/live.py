"""The gateway's one fan-out of live events (docs/design.md, "Live events"): a single poller per
gateway process reads the event log after its cursor and the progress of running work, and hands
each event to the clients whose filter and role want it, through a bounded queue per client.
Progress is a latest value: a client keeps only the newest sample per task or restore; a backup
task's sample carries its disks (`disks`) as last heard on the movers' live progress subject
(`heard`), which is the only place they are. A client whose queue fills (it reads too slowly) is
marked dropped; its handler sends a final event and closes, and the client resumes from the event
log with `Last-Event-ID`, losing nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import events as store
from shared.contracts import TaskProgress
from shared.model.access import Role
from shared.model.live import Filter, visible

log = logging.getLogger(__name__)

GAP_WAIT = 5.0  # s a hole in the ids may take to fill (a transaction not yet committed, PostgreSQL)
PROGRESS_EVERY = 1.0  # s between progress reads (the mover writes progress every second)
MAX_BACKLOG = 50_000  # events replayed on a resume; further back the client reloads instead


@dataclass(eq=False)
class Client:
    filter: Filter
    role: Role
    queue: asyncio.Queue[dict[str, Any]]
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    closed: bool = False

    def wants(self, event: dict[str, Any]) -> bool:
        return visible(str(event["type"]), self.role) and self.filter.matches(event)


@dataclass
class Resume:
    """What a client resuming after `last_id` gets first: the events since, or `reset` when they
    are no longer all in the log (the client must reload its state)."""

    backlog: list[dict[str, Any]]
    reset: str | None = None


class Hub:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        *,
        poll: float,
        queue_size: int,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.poll = poll
        self.queue_size = queue_size
        self.cursor = 0
        self.clients: set[Client] = set()
        self.samples: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._start = asyncio.Lock()
        self._gap_since: float | None = None
        self._progress_at = 0.0
        self.disks: dict[str, list[dict[str, Any]]] = {}  # task id -> its disks, as last heard

    def heard(self, data: bytes) -> None:
        """A mover's live TaskProgress: keep its disks for the task's next sample."""
        with contextlib.suppress(ValidationError):
            sample = TaskProgress.model_validate_json(data)
            if sample.disks:
                self.disks[sample.task_id] = [d.model_dump() for d in sample.disks]

    async def _ensure_started(self) -> None:
        async with self._start:
            if self._task is None:
                self.cursor = await asyncio.to_thread(self._read, lambda s: store.bounds(s)[1])
                self.samples = self._with_disks(await asyncio.to_thread(self._samples))
                self._task = asyncio.create_task(self._run(), name="live-events")

    def _read(self, work: Callable[[Session], Any]) -> Any:
        with self.sessions() as session:
            return work(session)

    async def subscribe(self, wanted: Filter, role: Role, last_id: int | None) -> tuple[Client, Resume]:
        await self._ensure_started()
        client = Client(wanted, role, asyncio.Queue(self.queue_size))
        upto = self.cursor  # taken with the registration, in one step of the loop: no gap, no overlap
        self.clients.add(client)
        for key, sample in self.samples.items():
            if client.wants(sample):
                client.progress[key] = sample
        if last_id is None:
            return client, Resume([])
        try:
            resume = await asyncio.to_thread(self._read, lambda s: _replay(s, last_id, upto))
        except BaseException:
            self.unsubscribe(client)
            raise
        resume.backlog = [e for e in resume.backlog if client.wants(e)]
        return client, resume

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in self.clients:
            client.closed = True
            client.wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except Exception as exc:  # the database away: try again next round
                log.warning("live events: %s", exc)
            await asyncio.sleep(self.poll)

    async def _round(self) -> None:
        while True:
            rows = await asyncio.to_thread(self._read, _after(self.cursor))
            for row in rows:
                if self.cursor and row.id != self.cursor + 1:  # a hole: wait for its transaction
                    now = time.monotonic()
                    if self._gap_since is None:
                        self._gap_since = now
                    if now - self._gap_since < GAP_WAIT:
                        return
                self._gap_since = None
                self.cursor = row.id
                self._deliver(store.view(row))
            if len(rows) < 500:
                break
        if time.monotonic() - self._progress_at >= PROGRESS_EVERY:
            self._progress_at = time.monotonic()
            self._progress(self._with_disks(await asyncio.to_thread(self._samples)))

    def _samples(self) -> dict[str, dict[str, Any]]:
        return {s["key"]: s for s in self._read(store.progress)}

    def _with_disks(self, samples: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The tasks' samples with their disks; the disks of tasks no longer running forgotten."""
        running = {s["task_id"] for s in samples.values() if s.get("task_id")}
        self.disks = {k: v for k, v in self.disks.items() if k in running}
        for sample in samples.values():
            if sample.get("task_id") in self.disks:
                sample["disks"] = self.disks[sample["task_id"]]
        return samples

    def _deliver(self, event: dict[str, Any]) -> None:
        for client in list(self.clients):
            if client.dropped or not client.wants(event):
                continue
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                client.dropped = True
            client.wake.set()

    def _progress(self, samples: dict[str, dict[str, Any]]) -> None:
        changed = [s for key, s in samples.items() if self.samples.get(key) != s]
        self.samples = samples
        for sample in changed:
            for client in self.clients:
                if client.wants(sample):
                    client.progress[sample["key"]] = sample
                    client.wake.set()


def _after(cursor: int) -> Callable[[Session], list[Any]]:
    return lambda session: store.after(session, cursor, limit=500)


def _replay(session: Session, last_id: int, upto: int) -> Resume:
    oldest, newest = store.bounds(session)
    if last_id > max(newest, upto):
        return Resume([], f"event {last_id} is unknown here (the newest is {max(newest, upto)}): reload")
    if last_id < upto and (oldest == 0 or last_id < oldest - 1):
        return Resume([], f"events after {last_id} are no longer kept (the oldest is {oldest}): reload")
    backlog: list[dict[str, Any]] = []
    after = last_id
    while after < upto:
        rows = store.after(session, after, upto=upto, limit=1000)
        if not rows:
            break
        backlog.extend(store.view(r) for r in rows)
        after = rows[-1].id
        if len(backlog) > MAX_BACKLOG:
            return Resume([], f"more than {MAX_BACKLOG} events since {last_id}: reload")
    return Resume(backlog)
