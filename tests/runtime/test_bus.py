"""The bus runner's ack/nak/term policy, against a real JetStream server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from shared.contracts import (
    STREAM_NAME,
    BusRejected,
    Event,
    JobRequested,
    StepFailed,
    Subject,
)
from shared.runtime.bus import Bus, BusUnavailable, Consumer, Delivery, Permanent, Retryable, run_consumer
from tests.plugins.nats import NatsServer
from tests.plugins.procs import free_port

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def job(run_id: str = "run-1") -> JobRequested:
    return JobRequested(occurred_at=NOW, run_id=run_id, job_id="job-1", trigger="manual")


async def collect(bus: Bus, subject: Subject, n: int, timeout: float = 10) -> list[bytes]:
    """Read the first n messages on a durable subject from the stream."""
    sub = await bus.js.subscribe(subject.value, ordered_consumer=True)
    got: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < n:
                msg = await sub.next_msg(timeout=timeout)
                got.append(msg.data)
    finally:
        await sub.unsubscribe()
    return got


async def run_until(bus: Bus, consumer: Consumer[JobRequested], done: asyncio.Event) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(bus, consumer, stop))
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_connect_fails_clearly_when_nats_is_away() -> None:
    with pytest.raises(BusUnavailable, match=r"cannot reach NATS at nats://127\.0\.0\.1:\d+"):
        await Bus.connect(f"nats://127.0.0.1:{free_port()}", "t", timeout=0.5)


async def test_ensure_stream_is_idempotent_and_repairs_subjects(bus: Bus) -> None:
    await bus.ensure_stream()
    jsm = bus.nc.jsm()
    info = await jsm.stream_info(STREAM_NAME)
    info.config.subjects = ["vbm.job.requested"]
    await jsm.update_stream(info.config)
    await bus.ensure_stream()
    info = await jsm.stream_info(STREAM_NAME)
    assert sorted(info.config.subjects or []) == sorted(s.value for s in Subject)


async def test_publish_is_deduplicated_by_msg_id(bus: Bus) -> None:
    first = await bus.publish(job())
    second = await bus.publish(job())
    third = await bus.publish(job("run-2"))
    assert not first.duplicate
    assert second.duplicate
    assert not third.duplicate
    info = await bus.nc.jsm().stream_info(STREAM_NAME)
    assert info.state.messages == 2


async def test_success_publishes_outputs_then_acks(bus: Bus) -> None:
    done = asyncio.Event()
    seen: list[Delivery] = []

    async def handle(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        seen.append(delivery)
        done.set()
        return [StepFailed(occurred_at=NOW, run_id=event.run_id, step="snapshot", reason="demo")]

    consumer = Consumer("t-ok", Subject.JOB_REQUESTED, JobRequested, handle)
    await bus.publish(job())
    await run_until(bus, consumer, done)
    out = await collect(bus, Subject.STEP_FAILED, 1)
    assert StepFailed.model_validate_json(out[0]).run_id == "run-1"
    info = await bus.nc.jsm().consumer_info(STREAM_NAME, "t-ok")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert [d.attempt for d in seen] == [1]


async def test_retryable_is_redelivered_with_backoff(bus: Bus) -> None:
    done = asyncio.Event()
    attempts: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()

    async def handle(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        attempts.append((delivery.attempt, loop.time()))
        if delivery.attempt < 3:
            raise Retryable("vCenter busy")
        done.set()
        return []

    consumer = Consumer("t-retry", Subject.JOB_REQUESTED, JobRequested, handle, backoff=(0.3, 0.6))
    await bus.publish(job())
    await run_until(bus, consumer, done)
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert attempts[1][1] - attempts[0][1] >= 0.25
    assert attempts[2][1] - attempts[1][1] >= 0.55


async def test_permanent_terms_and_reports(bus: Bus) -> None:
    done = asyncio.Event()

    async def handle(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        done.set()
        raise Permanent("VM vm-42 does not exist")

    def give_up(event: JobRequested, reason: str) -> Sequence[Event]:
        return [StepFailed(occurred_at=NOW, run_id=event.run_id, step="snapshot", reason=reason)]

    consumer = Consumer("t-perm", Subject.JOB_REQUESTED, JobRequested, handle, on_give_up=give_up)
    await bus.publish(job())
    await run_until(bus, consumer, done)
    failed = StepFailed.model_validate_json((await collect(bus, Subject.STEP_FAILED, 1))[0])
    rejected = BusRejected.model_validate_json((await collect(bus, Subject.BUS_REJECTED, 1))[0])
    assert failed.reason == "VM vm-42 does not exist"
    assert rejected.consumer == "t-perm" and rejected.deliveries == 1
    await asyncio.sleep(0.3)
    info = await bus.nc.jsm().consumer_info(STREAM_NAME, "t-perm")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_gives_up_after_max_deliver(bus: Bus) -> None:
    done = asyncio.Event()
    attempts: list[int] = []

    async def handle(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        attempts.append(delivery.attempt)
        if delivery.last_attempt:
            done.set()
        raise RuntimeError("boom")  # unexpected errors are retried like Retryable

    consumer = Consumer("t-max", Subject.JOB_REQUESTED, JobRequested, handle, max_deliver=3, backoff=(0.1,))
    await bus.publish(job())
    await run_until(bus, consumer, done)
    rejected = BusRejected.model_validate_json((await collect(bus, Subject.BUS_REJECTED, 1))[0])
    assert attempts == [1, 2, 3]
    assert "gave up after 3 attempts: boom" in rejected.reason


async def test_undecodable_payload_is_dead_lettered(bus: Bus) -> None:
    await bus.js.publish(Subject.JOB_REQUESTED.value, b'{"run_id": 7}')
    await bus.js.publish(Subject.JOB_REQUESTED.value, b"not json")
    handled: list[str] = []

    async def handle(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        handled.append(event.run_id)
        return []

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_consumer(bus, Consumer("t-bad", Subject.JOB_REQUESTED, JobRequested, handle), stop)
    )
    rejected = [BusRejected.model_validate_json(m) for m in await collect(bus, Subject.BUS_REJECTED, 2)]
    stop.set()
    await task
    assert handled == []
    assert all("not a valid JobRequested" in r.reason for r in rejected)


async def test_long_handler_is_kept_alive_not_redelivered(bus: Bus) -> None:
    done = asyncio.Event()
    attempts: list[int] = []

    async def handle(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        attempts.append(delivery.attempt)
        await asyncio.sleep(3.5)  # far past ack_wait: only in_progress keeps it ours
        done.set()
        return []

    consumer = Consumer("t-long", Subject.JOB_REQUESTED, JobRequested, handle, ack_wait=1.0)
    await bus.publish(job())
    await run_until(bus, consumer, done)
    await asyncio.sleep(1.5)
    info = await bus.nc.jsm().consumer_info(STREAM_NAME, "t-long")
    assert attempts == [1]
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_unacked_work_of_a_dead_worker_is_redelivered(nats_server: NatsServer) -> None:
    """A worker that dies mid-step (no ack, no nak) loses nothing: another one gets the message."""
    first = await Bus.connect(nats_server.url, "w1")
    await first.ensure_stream()
    started = asyncio.Event()

    async def hang(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        started.set()
        await asyncio.sleep(3600)
        return []

    consumer = Consumer("t-dead", Subject.JOB_REQUESTED, JobRequested, hang, ack_wait=1.0)
    await first.publish(job())
    task = asyncio.create_task(run_consumer(first, consumer, asyncio.Event()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    await first.nc.close()  # the worker is gone without a word

    second = await Bus.connect(nats_server.url, "w2")
    done = asyncio.Event()
    attempts: list[int] = []

    async def finish(event: JobRequested, delivery: Delivery) -> Sequence[Event]:
        attempts.append(delivery.attempt)
        done.set()
        return []

    await run_until(
        second, Consumer("t-dead", Subject.JOB_REQUESTED, JobRequested, finish, ack_wait=1.0), done
    )
    await second.close()
    assert attempts == [2]
