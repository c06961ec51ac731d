"""The notifier: deadline watchdogs, snapshot clean-up on failure, alerts."""

from __future__ import annotations

from functools import partial

from services.notifier.handlers import Deps, on_bus_rejected, on_step_failed, watchdog
from shared.bus import Consumer
from shared.contracts import BusRejected, StepFailed, Subject
from shared.pipeline.vcenters import VCenters
from shared.runtime import Context, Parts, main


async def wire(ctx: Context) -> Parts:
    deps = Deps(ctx, VCenters(ctx.settings))

    return Parts(
        consumers=[
            Consumer(
                "notifier",
                Subject.STEP_FAILED,
                StepFailed,
                partial(on_step_failed, deps=deps),
                ack_wait=ctx.settings.pipeline.ack_wait,
                max_deliver=10,
            ),
            Consumer(
                "notifier-rejected", Subject.BUS_REJECTED, BusRejected, partial(on_bus_rejected, deps=deps)
            ),
        ],
        tasks=[partial(watchdog, deps)],
        on_stop=[deps.vcenters.aclose],
    )


if __name__ == "__main__":
    main("notifier", wire)
