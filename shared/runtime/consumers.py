"""What a bus handler is: the consumer it is bound to, what it knows of a message (`Delivery`),
and how it says a failure is temporary (`Retryable`) or final (`Permanent`). The runner that
applies this policy is `shared/runtime/bus.py` (which re-exports these names)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import Span, SpanKind

from shared.contracts import Event, Subject
from shared.observe import tracing

E = TypeVar("E", bound=Event)


class Retryable(Exception):
    """The step may work later (vCenter busy, storage throttling): redeliver with backoff."""


class Permanent(Exception):
    """The step can never work for this message: stop redelivering and report the failure."""


@dataclass(frozen=True)
class Delivery:
    """What a handler may know about the message it is handling."""

    consumer: str
    subject: str
    stream_seq: int
    attempt: int
    max_deliver: int

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_deliver


Handler = Callable[[E, Delivery], Awaitable[Sequence[Event]]]
GiveUp = Callable[[E, str], Sequence[Event]]


@dataclass(frozen=True)
class Consumer(Generic[E]):
    """A durable pull consumer bound to one subject and one handler."""

    durable: str
    subject: Subject
    event_type: type[E]
    handler: Handler[E]
    max_deliver: int = 5
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    ack_wait: float = 30.0
    on_give_up: GiveUp[E] | None = None
    fetch_timeout: float = 1.0
    concurrency: int = 1  # messages handled at once (a mover: one per disk stream it offers)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.subject.value,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            # No server-side backoff list: it would replace ack_wait per delivery and fight the
            # nak delays below. A worker that dies silently is redelivered after ack_wait.
            max_ack_pending=1000,
        )

    def nak_delay(self, attempt: int) -> float:
        if not self.backoff:
            return 0.0
        return self.backoff[min(attempt - 1, len(self.backoff) - 1)]


@contextlib.contextmanager
def observed(delivery: Delivery, headers: Mapping[str, str] | None) -> Iterator[Span]:
    """The handler's span, named by the subject: a child of the message's trace context."""
    with tracing.span(
        delivery.subject,
        parent=headers,
        kind=SpanKind.CONSUMER,
        attrs={
            "messaging.system": "nats",
            "messaging.destination.name": delivery.subject,
            "messaging.consumer.group.name": delivery.consumer,
            "messaging.message.id": (headers or {}).get("Nats-Msg-Id"),
        },
        attempt=delivery.attempt,
        stream_seq=delivery.stream_seq,
    ) as span:
        yield span


def log_fields(event: Event) -> dict[str, str | None]:
    """The run's log fields an event names (SnapshotReady names its VM, StepFailed its moref)."""
    return {
        "run_id": getattr(event, "run_id", None),
        "job": getattr(event, "job_id", None),
        "vm": getattr(event, "vm_name", None) or getattr(event, "vm_moref", None),
    }
