"""The transactional outbox: events are stored with the state change they report, then published.

A handler that changes state calls `stage(session, event)` inside its transaction; the relay
(one per service process) publishes staged events in order with their deterministic message ids
and marks them sent. A crash between commit and publish only delays the event; two relays
publishing the same row is harmless (JetStream drops the duplicate by its `Nats-Msg-Id`).

Each row keeps the trace context it was staged in (`traceparent`, `tracestate`), and the relay
publishes it as the message's headers: a trace goes on through the outbox, across processes and
restarts (docs/design.md, "Traces").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from shared.contracts import Event, event_type_for
from shared.db.models import Outbox
from shared.observe import tracing

if TYPE_CHECKING:  # the CLI stages events without loading the NATS client
    from shared.runtime.bus import Bus

log = logging.getLogger(__name__)

KEEP_SENT = timedelta(days=1)


def stage(session: Session, event: Event, now: datetime) -> None:
    session.add(
        Outbox(
            subject=event.SUBJECT.value,
            msg_id=event.msg_id(),
            payload=event.model_dump_json(),
            created_at=now,
            trace_context=tracing.carrier() or None,
        )
    )


class Relay:
    """Publishes staged events; `kick()` after a commit publishes at once instead of next poll."""

    def __init__(
        self,
        bus: Bus,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        *,
        interval: float = 1.0,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.clock = clock
        self.interval = interval
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()  # before publishing: a kick while it publishes is not lost
            try:
                await self.publish_pending()
            except Exception as exc:  # NATS or the database away: try again next round
                log.warning("outbox relay: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
        with contextlib.suppress(Exception):
            await self.publish_pending()

    async def publish_pending(self, batch: int = 200) -> int:
        rows = await asyncio.to_thread(self._pending, batch)
        sent: list[int] = []
        try:
            for row_id, subject, payload, trace in rows:
                event = event_type_for(subject).model_validate_json(payload)
                await self.bus.publish(event, trace=tracing.carrier_json(trace) or {})
                sent.append(row_id)
        finally:
            if sent:
                await asyncio.to_thread(self._mark, sent)
        return len(sent)

    def _pending(self, batch: int) -> list[tuple[int, str, str, object]]:
        with self.sessions() as s:
            rows = s.execute(
                select(Outbox.id, Outbox.subject, Outbox.payload, Outbox.trace_context)
                .where(Outbox.published_at.is_(None))
                .order_by(Outbox.id)
                .limit(batch)
            ).all()
            return [(r[0], r[1], r[2], r[3]) for r in rows]

    def _mark(self, ids: list[int]) -> None:
        now = self.clock()
        with self.sessions.begin() as s:
            for row in s.scalars(select(Outbox).where(Outbox.id.in_(ids))):
                row.published_at = now
            s.execute(delete(Outbox).where(Outbox.published_at < now - KEEP_SENT))
