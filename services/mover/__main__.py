"""The mover: reads snapshot disks (CBT ranges when it can) and commits restore points; restores
restore points as new VMs; copies verified restore points to secondary repositories."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from functools import partial

from services.mover.backup import on_snapshot_ready
from services.mover.deps import Deps
from services.mover.replicate import on_replicate_requested
from services.mover.restore.handler import on_restore_requested
from services.mover.streams import Latency, LocalStreams, note_throttle
from shared.catalog.vcenters import loader as stored_vcenter
from shared.contracts import Event, ReplicateRequested, RestoreRequested, SnapshotReady, StepFailed, Subject
from shared.runtime.bus import Consumer
from shared.runtime.service import Context, Parts, main
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)


async def wire(ctx: Context) -> Parts:
    streams = ctx.settings.mover.streams
    deps = Deps(
        ctx,
        VCenters(ctx.settings, load=stored_vcenter(ctx.settings, ctx.sessions)),
        local=LocalStreams(streams),
        latency=Latency(ctx),
    )
    latency = deps.latency
    assert latency is not None

    def notify(vcenter: str, datastore: str, message: str) -> None:
        with contextlib.suppress(Exception):  # the run's log is for people; the limit is what counts
            note_throttle(ctx, vcenter, datastore, message, ctx.clock())

    async def latency_control() -> None:
        while not ctx.stop.is_set():
            try:
                await latency.adjust(notify)
            except Exception:
                log.exception("storage latency control failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stop.wait(), 1.0)

    def failed(event: SnapshotReady, reason: str) -> Sequence[Event]:
        return [StepFailed.of(event, "transfer", reason, ctx.clock())]

    async def close() -> None:
        await deps.close()
        await deps.vcenters.aclose()

    return Parts(
        capacity=streams,
        tasks=[latency_control],
        consumers=[
            Consumer(
                "mover",
                Subject.SNAPSHOT_READY,
                SnapshotReady,
                partial(on_snapshot_ready, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
                max_deliver=4,
                backoff=(2.0, 10.0, 30.0),
                on_give_up=failed,
                concurrency=streams,  # one VM per stream; their other disks share the free ones
            ),
            Consumer(  # an attempt that fails is retried later by the notifier (catalog.replication)
                "mover-replicate",
                Subject.REPLICATE_REQUESTED,
                ReplicateRequested,
                partial(on_replicate_requested, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
                max_deliver=3,
                backoff=(2.0, 10.0),
            ),
            Consumer(  # a restore that keeps failing to start is ended by the notifier's watchdog
                "mover-restores",
                Subject.RESTORE_REQUESTED,
                RestoreRequested,
                partial(on_restore_requested, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
                max_deliver=3,
                backoff=(2.0, 10.0),
            ),
        ],
        on_stop=[close],
    )


if __name__ == "__main__":
    main("mover", wire)
