"""The bus's Prometheus metrics (default registry; exposed on /metrics by each service).

Labels are bounded: the subject (one of the durable subjects, never an id) and the consumer's
durable name. Updated by the bus runner (shared/runtime/bus.py): every handled message, every
failure, every redelivery, and each consumer's JetStream backlog every few seconds.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HANDLER_DURATION = Histogram(
    "vbm_event_handler_duration_seconds",
    "Time a bus handler took for one message (publishing its events and the ack included)",
    ["subject", "consumer"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
HANDLER_ERRORS = Counter(
    "vbm_event_handler_errors_total",
    "Messages a bus handler failed on, by how: retry (redelivered later), permanent (given up),"
    " invalid (payload refused)",
    ["subject", "consumer", "kind"],
)
REDELIVERIES = Counter(
    "vbm_event_redeliveries_total",
    "Messages delivered again (a handler failed, a worker died or took longer than ack_wait)",
    ["subject", "consumer"],
)
CONSUMER_PENDING = Gauge(
    "vbm_jetstream_consumer_pending",
    "Messages of a JetStream consumer not yet delivered (num_pending)",
    ["consumer"],
    multiprocess_mode="mostrecent",  # every instance of a service reads the same consumer
)
CONSUMER_ACK_PENDING = Gauge(
    "vbm_jetstream_consumer_ack_pending",
    "Messages of a JetStream consumer delivered but not yet acknowledged (num_ack_pending)",
    ["consumer"],
    multiprocess_mode="mostrecent",
)


def handled(subject: str, consumer: str, seconds: float) -> None:
    HANDLER_DURATION.labels(subject, consumer).observe(seconds)


def failed(subject: str, consumer: str, kind: str) -> None:
    HANDLER_ERRORS.labels(subject, consumer, kind).inc()


def delivered(subject: str, consumer: str, attempt: int) -> None:
    if attempt > 1:
        REDELIVERIES.labels(subject, consumer).inc()


def backlog(consumer: str, pending: int, ack_pending: int) -> None:
    CONSUMER_PENDING.labels(consumer).set(pending)
    CONSUMER_ACK_PENDING.labels(consumer).set(ack_pending)
