"""The bus: connect to NATS, declare the stream and consumers, publish, and run consumers.

`run_consumer` is the one place in vbm that acks, naks and terms JetStream messages. Handlers are
plain `async def handle(event, delivery) -> events`; they never touch the message. The policy:

* the payload does not decode or validate -> term, publish `BusRejected` (dead letter);
* the handler returns events -> publish them (deterministic `Nats-Msg-Id`), then ack (vbm's
  handlers return none: they stage their events in the outbox with their state change);
* the handler raises `Retryable` (or an unexpected error) -> nak with the consumer's backoff,
  until `max_deliver` deliveries; then it is handled as permanent;
* the handler raises `Permanent` -> term, publish the consumer's give-up events and `BusRejected`.

While a handler runs, the runner tells the server the work is in progress every third of
`ack_wait`, so long steps are not redelivered to another worker behind their back. Publishing
before acking means a crash between the two redelivers the message and re-publishes the same
message ids, which JetStream drops as duplicates: handlers must be idempotent.

Each message is handled inside a span named by its subject, a child of the trace context its
headers carry (`traceparent`, put there by the outbox relay), with the run's log fields bound
(run_id, job, vm) and the bus metrics updated (shared/observe/bus_metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import (
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from opentelemetry.trace import Span
from pydantic import ValidationError

from shared.contracts import STREAM_NAME, STREAM_SUBJECTS, BusRejected, Event, Payload
from shared.observe import bus_metrics, logs, tracing
from shared.runtime.consumers import Consumer, Delivery, Handler, Permanent, Retryable, log_fields, observed

__all__ = [
    "Bus",
    "BusUnavailable",
    "Consumer",
    "Delivery",
    "Handler",
    "Permanent",
    "Retryable",
    "run_consumer",
    "stream_config",
]

log = logging.getLogger(__name__)

STREAM_MAX_AGE_S = 14 * 24 * 3600
DUPLICATE_WINDOW_S = 15 * 60
BACKLOG_EVERY = 5.0  # seconds between two reads of a consumer's pending counts (metrics)


class BusUnavailable(Exception):
    """NATS cannot be reached or has no JetStream; the message says where and what to do."""


def stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=STREAM_NAME,
        description="vbm durable events (see docs/design.md, Events)",
        subjects=list(STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=STREAM_MAX_AGE_S,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
    )


@dataclass
class Bus:
    """A connection to NATS with JetStream; build it with `Bus.connect`."""

    nc: NATS
    js: JetStreamContext
    name: str
    _subs: list[Any] = field(default_factory=list)

    @classmethod
    async def connect(cls, servers: str, name: str, *, timeout: float = 5.0) -> Bus:
        """Connect, retrying until `timeout`; raise BusUnavailable with the URL if it fails."""
        urls = [s.strip() for s in servers.split(",") if s.strip()]
        deadline = asyncio.get_running_loop().time() + timeout
        last: BaseException | None = None
        while True:
            remaining = max(0.5, deadline - asyncio.get_running_loop().time())
            try:
                connecting = nats.connect(
                    urls,
                    name=name,
                    connect_timeout=min(2.0, timeout),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=_log_error,
                    disconnected_cb=_log_disconnect,
                    reconnected_cb=_log_reconnect,
                )
                # nats.connect never gives up on its own when reconnects are unlimited.
                nc = await asyncio.wait_for(connecting, remaining)
                break
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                last = exc
                if asyncio.get_running_loop().time() >= deadline:
                    raise BusUnavailable(
                        f"cannot reach NATS at {servers} ({exc or type(exc).__name__}): start it"
                        " (`vbm up` starts one) or set VBM_NATS__URL"
                    ) from last
                await asyncio.sleep(0.3)
        return cls(nc=nc, js=nc.jetstream(), name=name)

    async def ensure_stream(self, replicas: int = 1) -> None:
        """Declare the event stream, or bring an existing one to this version's config."""
        jsm = self.nc.jsm()
        wanted = stream_config(replicas)
        try:
            info = await jsm.stream_info(STREAM_NAME)
        except nats.js.errors.NotFoundError:
            try:
                await jsm.add_stream(wanted)
                return
            except nats.js.errors.ServiceUnavailableError as exc:
                raise BusUnavailable("NATS answers but JetStream is not enabled (-js)") from exc
        except nats.errors.NoRespondersError as exc:
            raise BusUnavailable("NATS answers but JetStream is not enabled (-js)") from exc
        have = info.config
        if sorted(have.subjects or []) != sorted(wanted.subjects or []) or (
            have.duplicate_window != wanted.duplicate_window
        ):
            wanted.num_replicas = have.num_replicas  # replicas change only by an operator
            await jsm.update_stream(wanted)

    async def ensure_consumer(self, consumer: Consumer[Any]) -> None:
        await self.nc.jsm().add_consumer(STREAM_NAME, consumer.config())

    async def publish(
        self, event: Event, *, timeout: float = 5.0, trace: Mapping[str, str] | None = None
    ) -> PubAck:
        """Publish a durable event with its deterministic message id and a trace context: `trace`
        (the one stored with an outbox row), else the current span's."""
        headers = {**(tracing.carrier() if trace is None else trace), "Nats-Msg-Id": event.msg_id()}
        return await self.js.publish(
            event.SUBJECT.value,
            event.model_dump_json().encode(),
            timeout=timeout,
            stream=STREAM_NAME,
            headers=headers,
        )

    async def publish_live(self, subject: str, payload: Payload) -> None:
        """Best-effort live message (heartbeats, progress); never stored."""
        if self.nc.is_connected:
            await self.nc.publish(subject, payload.model_dump_json().encode())

    async def close(self) -> None:
        """Drain: finish what is in flight, flush publishes, then close."""
        if not self.nc.is_closed:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self.nc.drain()


Fields = Callable[[Event], Awaitable[Mapping[str, str]]]


async def run_consumer(
    bus: Bus, consumer: Consumer[Any], stop: asyncio.Event, fields: Fields | None = None
) -> None:
    """Fetch and handle up to `consumer.concurrency` messages at once until `stop` is set; a
    message is fetched only when a handler is free for it, so the rest wait in the stream for
    another worker. On stop, the messages in hand are finished (the service allows a grace).
    `fields`: the log fields of an event's run it does not name itself (its job, its VM)."""
    delay = 0.5
    while True:  # JetStream may still be settling (a restart, an election): keep asking
        try:
            await bus.ensure_consumer(consumer)
            break
        except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            if stop.is_set():
                return
            log.warning(
                "consumer %s: JetStream did not answer (%s); asking again", consumer.durable, exc or "timeout"
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    sub = await bus.js.pull_subscribe_bind(durable=consumer.durable, stream=STREAM_NAME)
    log.info("consumer %s on %s started", consumer.durable, consumer.subject.value)
    in_hand: set[asyncio.Task[None]] = set()
    backlog = asyncio.create_task(_watch_backlog(bus, consumer))
    try:
        while not stop.is_set():
            free = consumer.concurrency - len(in_hand)
            if free <= 0:
                await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await sub.fetch(free, timeout=consumer.fetch_timeout)
            except TimeoutError:
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
                return
            except nats.errors.Error as exc:
                log.warning("consumer %s fetch failed: %s", consumer.durable, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                if consumer.concurrency == 1:
                    await _process(bus, consumer, msg, fields)
                    continue
                task = asyncio.create_task(_guarded(bus, consumer, msg, fields))
                in_hand.add(task)
                task.add_done_callback(in_hand.discard)
    finally:
        backlog.cancel()
        if in_hand:
            await asyncio.gather(*in_hand, return_exceptions=True)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await sub.unsubscribe()


async def _guarded(bus: Bus, consumer: Consumer[Any], msg: Msg, fields: Fields | None) -> None:
    """One of several messages in hand: what escapes it (a publish that failed) is logged; the
    message, not acked, is redelivered after ack_wait."""
    try:
        await _process(bus, consumer, msg, fields)
    except Exception:
        log.exception("consumer %s: handling a message failed", consumer.durable)


async def _process(bus: Bus, consumer: Consumer[Any], msg: Msg, fields: Fields | None = None) -> None:
    meta = msg.metadata
    delivery = Delivery(
        consumer=consumer.durable,
        subject=msg.subject,
        stream_seq=meta.sequence.stream,
        attempt=meta.num_delivered,
        max_deliver=consumer.max_deliver,
    )
    subject = consumer.subject.value  # the label: the consumer's subject, never a message's id
    bus_metrics.delivered(subject, consumer.durable, delivery.attempt)
    started = time.monotonic()
    try:
        with observed(delivery, msg.headers) as span:
            await _handle(bus, consumer, msg, delivery, span, fields)
    finally:
        bus_metrics.handled(subject, consumer.durable, time.monotonic() - started)


async def _handle(
    bus: Bus, consumer: Consumer[Any], msg: Msg, delivery: Delivery, span: Span, fields: Fields | None
) -> None:
    subject = consumer.subject.value
    try:
        event = consumer.event_type.model_validate_json(msg.data)
    except ValidationError as exc:
        reason = f"payload is not a valid {consumer.event_type.__name__}: {_first_error(exc)}"
        bus_metrics.failed(subject, consumer.durable, "invalid")
        tracing.failed(exc, span)
        await _reject(bus, msg, delivery, reason, ())
        return
    named = log_fields(event)
    if fields is not None:
        named = {**(await fields(event)), **{k: v for k, v in named.items() if v}}
    tracing.annotate(**named)
    with logs.bound(**named):
        await _run_handler(bus, consumer, msg, delivery, event, span)


async def _run_handler(
    bus: Bus, consumer: Consumer[Any], msg: Msg, delivery: Delivery, event: Event, span: Span
) -> None:
    subject = consumer.subject.value
    heartbeat = asyncio.create_task(_keep_alive(msg, consumer.ack_wait / 3))
    try:
        outputs = await consumer.handler(event, delivery)
    except Permanent as exc:
        bus_metrics.failed(subject, consumer.durable, "permanent")
        tracing.failed(exc, span)
        await _give_up(bus, consumer, msg, delivery, event, str(exc) or type(exc).__name__)
        return
    except Exception as exc:
        retryable = isinstance(exc, Retryable)
        reason = str(exc) or type(exc).__name__
        tracing.failed(exc, span)
        bus_metrics.failed(subject, consumer.durable, "permanent" if delivery.last_attempt else "retry")
        if not retryable:
            log.exception("consumer %s: unexpected error on seq %s", consumer.durable, delivery.stream_seq)
        if delivery.last_attempt:
            await _give_up(
                bus, consumer, msg, delivery, event, f"gave up after {delivery.attempt} attempts: {reason}"
            )
            return
        delay = consumer.nak_delay(delivery.attempt)
        log.info(
            "consumer %s: attempt %d failed (%s), retry in %.1fs",
            consumer.durable,
            delivery.attempt,
            reason,
            delay,
        )
        with contextlib.suppress(nats.errors.Error):
            await msg.nak(delay=delay)
        return
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat

    for out in outputs:
        await bus.publish(out)
    try:
        await msg.ack_sync(timeout=5.0)
    except (nats.errors.Error, TimeoutError) as exc:
        # The work is done and its events are out; a redelivery finds it done (idempotent).
        log.warning(
            "consumer %s: ack of seq %s not confirmed: %s", consumer.durable, delivery.stream_seq, exc
        )


async def _give_up(
    bus: Bus, consumer: Consumer[Any], msg: Msg, delivery: Delivery, event: Event, reason: str
) -> None:
    extra: Sequence[Event] = ()
    if consumer.on_give_up is not None:
        extra = consumer.on_give_up(event, reason)
    await _reject(bus, msg, delivery, reason, extra)


async def _reject(bus: Bus, msg: Msg, delivery: Delivery, reason: str, extra: Sequence[Event]) -> None:
    log.error("consumer %s: rejecting seq %s: %s", delivery.consumer, delivery.stream_seq, reason)
    for out in extra:
        await bus.publish(out)
    await bus.publish(
        BusRejected(
            occurred_at=datetime.now(UTC),
            consumer=delivery.consumer,
            subject=delivery.subject,
            stream_seq=delivery.stream_seq,
            deliveries=delivery.attempt,
            reason=reason[:2000],
        )
    )
    with contextlib.suppress(nats.errors.Error):
        await msg.term()


async def _watch_backlog(bus: Bus, consumer: Consumer[Any]) -> None:
    """The consumer's pending counts, for the metrics, now and every BACKLOG_EVERY seconds."""
    while True:
        try:
            info = await bus.js.consumer_info(STREAM_NAME, consumer.durable, timeout=2.0)
            bus_metrics.backlog(consumer.durable, info.num_pending or 0, info.num_ack_pending or 0)
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("consumer %s: no consumer info (%s)", consumer.durable, exc)
        await asyncio.sleep(BACKLOG_EVERY)


async def _keep_alive(msg: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(body)"
    return f"{where}: {err['msg']}"


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)


async def _log_disconnect() -> None:
    log.info("nats: disconnected")


async def _log_reconnect() -> None:
    log.info("nats: reconnected")
