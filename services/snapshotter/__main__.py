"""The snapshotter: takes backup snapshots just in time (the dispatcher decides when), and removes
them once the data is safe."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from services.snapshotter.dispatch import Dispatcher
from services.snapshotter.handlers import Deps, on_job_requested, on_transfer_done
from services.snapshotter.orphans import sweep_orphans
from services.snapshotter.plan import resolve_vms
from services.snapshotter.step import snapshot_task
from shared.catalog import marker
from shared.catalog.vcenters import loader as stored_vcenter
from shared.contracts import Event, JobRequested, StepFailed, Subject, TransferDone
from shared.runtime.bus import Consumer
from shared.runtime.service import Context, Parts, main
from shared.vsphere.pool import VCenters


async def wire(ctx: Context) -> Parts:
    deps = Deps(ctx, VCenters(ctx.settings, load=stored_vcenter(ctx.settings, ctx.sessions)))
    deps.secret = await asyncio.to_thread(marker.key, ctx.sessions)
    dispatcher = Dispatcher(
        ctx,
        resolve=partial(resolve_vms, deps.vcenters),
        snapshot=partial(snapshot_task, deps),
    )
    deps.kick = dispatcher.kick

    def run_failed(event: JobRequested, reason: str) -> Sequence[Event]:
        return [StepFailed.of(event, "snapshot", reason, ctx.clock())]

    async def orphans() -> None:
        await sweep_orphans(ctx, deps.vcenters, deps.secret)

    return Parts(
        tasks=[orphans, dispatcher.run],
        consumers=[
            Consumer(
                "snapshotter",
                Subject.JOB_REQUESTED,
                JobRequested,
                partial(on_job_requested, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
                on_give_up=run_failed,
            ),
            Consumer(
                "snapshotter-cleanup",
                Subject.TRANSFER_DONE,
                TransferDone,
                partial(on_transfer_done, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
            ),
        ],
        on_stop=[deps.vcenters.aclose],
    )


if __name__ == "__main__":
    main("snapshotter", wire)
