"""The scheduler's daily upkeep: pruning the audit log to `audit.retention_days` (the pruning is
itself an `audit.prune` record; docs/design.md, "Audit log"). Checked hourly, done when the last
prune is a day old, so restarts and several schedulers still prune once a day."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shared.catalog.audit_chain import prune_if_due
from shared.model.audit import system
from shared.runtime.service import Context

log = logging.getLogger(__name__)

FIRST_CHECK = 300.0  # seconds after start: not in the rush of a start
CHECK_EVERY = 3600.0


async def audit_prune_loop(ctx: Context) -> None:
    settings = ctx.settings.audit
    if not settings.auto_prune:
        log.info("audit log: automatic pruning is off (audit.auto_prune); `vbm audit prune` prunes")
        return
    delay = FIRST_CHECK
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), delay)
        if ctx.stop.is_set():
            return
        delay = CHECK_EVERY
        try:
            done = await asyncio.to_thread(
                prune_if_due, ctx.sessions, settings.retention_days, ctx.clock(), actor=system("scheduler")
            )
        except Exception as exc:  # e.g. a PostgreSQL role without DELETE on audit_log
            log.error("audit log prune failed (retried in an hour): %s", exc)
            continue
        if done is not None:
            log.info(
                "audit log pruned: %d records older than %d days removed (record %s is the anchor)",
                done.deleted, settings.retention_days, done.anchor_id,
            )  # fmt: skip
