"""The verifier: checks every new restore point (manifest, every chunk, sizes), restore points on
request, and re-verifies every repository a slice of its chunks at a time."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from services.verifier.handlers import Deps, on_transfer_done, on_verify_requested
from services.verifier.reverify import gc_loop, reverify_loop, usage_loop
from shared.catalog.vcenters import loader as stored_vcenter
from shared.contracts import Event, StepFailed, Subject, TransferDone, VerifyDone, VerifyRequested
from shared.runtime.bus import Consumer
from shared.runtime.service import Context, Parts, main
from shared.vsphere.pool import VCenters


async def wire(ctx: Context) -> Parts:
    deps = Deps(ctx, VCenters(ctx.settings, load=stored_vcenter(ctx.settings, ctx.sessions)))

    def failed(event: TransferDone, reason: str) -> Sequence[Event]:
        return [StepFailed.of(event, "verify", reason, ctx.clock())]

    def request_failed(event: VerifyRequested, reason: str) -> Sequence[Event]:
        return [
            VerifyDone(
                occurred_at=ctx.clock(),
                request_id=event.request_id,
                restore_point_id=event.restore_point_id,
                ok=False,
                problems=(f"the verification could not run: {reason}",),
            )
        ]

    return Parts(
        consumers=[
            Consumer(
                "verifier-requests",
                Subject.VERIFY_REQUESTED,
                VerifyRequested,
                partial(on_verify_requested, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
                on_give_up=request_failed,
            ),
            Consumer(
                "verifier",
                Subject.TRANSFER_DONE,
                TransferDone,
                partial(on_transfer_done, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
                on_give_up=failed,
            ),
        ],
        tasks=[partial(reverify_loop, deps), partial(usage_loop, deps), partial(gc_loop, deps)],
        on_stop=[deps.vcenters.aclose],
    )


if __name__ == "__main__":
    main("verifier", wire)
