"""What the bus runner tells about its work, against a real JetStream server: the trace context
goes through the outbox and the message headers to the handler's span (a redelivery joins the same
trace), the handler's log lines carry the run's fields, and the bus metrics move."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

from shared.contracts import Event, JobRequested, Subject
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Outbox
from shared.observe import logs, tracing
from shared.runtime import bus as bus_module
from shared.runtime.bus import Bus, Consumer, Delivery, Retryable, run_consumer
from shared.runtime.outbox import Relay, stage

NOW = datetime(2026, 12, 6, tzinfo=UTC)
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def _provider() -> None:
    """One SDK provider for this process (OpenTelemetry allows one): spans to memory."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)


@pytest.fixture
def spans(_provider: None) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def named(found: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


async def test_trace_goes_through_the_outbox_and_a_redelivery(
    bus: Bus, spans: InMemorySpanExporter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vbm.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    caplog.set_level(logging.INFO)
    handler_logs = logging.getLogger("test.handler")
    done = asyncio.Event()
    seen: list[tuple[int, dict[str, str]]] = []

    async def handle(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        seen.append((delivery.attempt, logs.current()))
        handler_logs.info("handling attempt %d", delivery.attempt)
        if delivery.attempt == 1:
            raise Retryable("vCenter busy")
        done.set()
        return []

    labels = {"subject": "vbm.job.requested", "consumer": "t-trace"}
    before = {
        "redelivered": value("vbm_event_redeliveries_total", **labels),
        "retry": value("vbm_event_handler_errors_total", **labels, kind="retry"),
        "handled": value("vbm_event_handler_duration_seconds_count", **labels),
    }
    with tracing.span("POST /api/v1/jobs/{job_id}/run") as root, sessions.begin() as s:
        stage(s, JobRequested(occurred_at=NOW, run_id="run-7", job_id="job-3", trigger="api"), NOW)
    with sessions() as s:
        stored = s.query(Outbox).one().trace_context
    trace_id = f"{root.get_span_context().trace_id:032x}"
    assert stored is not None and stored["traceparent"].split("-")[1] == trace_id

    # published by the relay outside any span: the stored context is what the message carries
    assert await Relay(bus, sessions, lambda: NOW).publish_pending() == 1
    consumer = Consumer("t-trace", Subject.JOB_REQUESTED, JobRequested, handle, backoff=(0.2,))
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(bus, consumer, stop))
    await asyncio.wait_for(done.wait(), 20)
    stop.set()
    await asyncio.wait_for(task, 10)
    engine.dispose()

    handled = named(spans.get_finished_spans(), "vbm.job.requested")
    assert len(handled) == 2  # the first try and its redelivery
    for span in handled:
        assert span.context.trace_id == root.get_span_context().trace_id
        assert span.parent is not None and span.parent.span_id == root.get_span_context().span_id
        assert span.attributes is not None and span.attributes["vbm.run_id"] == "run-7"
    first, second = sorted(handled, key=lambda s: s.attributes["vbm.attempt"] if s.attributes else 0)
    assert first.status.status_code == StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.status_code != StatusCode.ERROR

    # the handler's lines carry the run's fields and the trace id; none once it is done
    assert [(a, f["run_id"], f["job"], f["trace_id"]) for a, f in seen] == [
        (1, "run-7", "job-3", trace_id),
        (2, "run-7", "job-3", trace_id),
    ]
    assert logs.current() == {}
    lines = [r for r in caplog.records if r.name == "test.handler"]
    assert len(lines) == 2

    assert value("vbm_event_redeliveries_total", **labels) == before["redelivered"] + 1
    assert value("vbm_event_handler_errors_total", **labels, kind="retry") == before["retry"] + 1
    assert value("vbm_event_handler_duration_seconds_count", **labels) == before["handled"] + 2


async def test_consumer_backlog_is_a_gauge(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_module, "BACKLOG_EVERY", 0.2)
    for n in range(3):
        await bus.publish(JobRequested(occurred_at=NOW, run_id=f"run-b{n}", job_id="j", trigger="api"))
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        started.set()
        await release.wait()
        return []

    consumer = Consumer("t-backlog", Subject.JOB_REQUESTED, JobRequested, slow)
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(bus, consumer, stop))
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.5)
    # one in hand (delivered, not acked), the other two waiting in the stream
    assert value("vbm_jetstream_consumer_ack_pending", consumer="t-backlog") == 1
    assert value("vbm_jetstream_consumer_pending", consumer="t-backlog") == 2
    release.set()
    deadline = asyncio.get_running_loop().time() + 10
    while value("vbm_jetstream_consumer_pending", consumer="t-backlog") + value(
        "vbm_jetstream_consumer_ack_pending", consumer="t-backlog"
    ):
        assert asyncio.get_running_loop().time() < deadline, "the backlog gauge did not drain"
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 10)
