"""The notifier: deadline watchdogs, snapshot clean-up on failure, alerts."""

from __future__ import annotations

from functools import partial

from services.notifier.handlers import Deps, on_bus_rejected, on_step_failed, watchdog
from services.notifier.notify import on_alert_raised, on_restore_done, on_run_finished
from shared.catalog.vcenters import loader as stored_vcenter
from shared.contracts import AlertRaised, BusRejected, RestoreDone, RunFinished, StepFailed, Subject
from shared.runtime.bus import Consumer
from shared.runtime.service import Context, Parts, main
from shared.vsphere.pool import VCenters

NOTIFY_ACK_WAIT = 120.0


async def wire(ctx: Context) -> Parts:
    deps = Deps(ctx, VCenters(ctx.settings, load=stored_vcenter(ctx.settings, ctx.sessions)))
    retry = tuple(ctx.settings.notifications.retry)

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
            # Channels: a failed delivery is retried after each of notifications.retry's delays.
            *(
                Consumer(
                    durable,
                    subject,
                    event_type,
                    partial(handler, deps=deps),
                    max_deliver=len(retry) + 1,
                    backoff=retry,
                    ack_wait=NOTIFY_ACK_WAIT,
                )
                for durable, subject, event_type, handler in (
                    ("notifier-runs", Subject.RUN_FINISHED, RunFinished, on_run_finished),
                    ("notifier-restores", Subject.RESTORE_DONE, RestoreDone, on_restore_done),
                    ("notifier-alerts", Subject.ALERT_RAISED, AlertRaised, on_alert_raised),
                )
            ),
        ],
        tasks=[partial(watchdog, deps)],
        on_stop=[deps.vcenters.aclose],
    )


if __name__ == "__main__":
    main("notifier", wire)
