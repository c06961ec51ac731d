"""Removing backup snapshots: after a transfer, after a failure, and by the ledger sweeper.

A snapshot is looked up on its VM by name as well as by moref, so one whose create timed out
and completed later is found too. A removal that fails is retried with backoff; after
`cleanup_attempts` failures the entry becomes `stuck` and an alert names the VM and the
snapshot (the sweeper keeps trying, the backoff doubling up to STUCK_RETRY).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from shared.catalog import ledger, runlog, tasks
from shared.catalog.alerts import raise_alert
from shared.runtime.service import Context
from shared.vsphere import NotFound, VCenter
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)

STUCK_RETRY = timedelta(minutes=15)


async def remove_entries(ctx: Context, vcenters: VCenters, *, task_id: str, keep: str | None = None) -> bool:
    """Remove every open snapshot of a task (but `keep`, the snapshot of a try in progress);
    True when none is left."""
    with ctx.sessions() as s:
        keys = [
            (e.snapshot_name, e.vcenter, e.vm_moref)
            for e in ledger.open_entries(s, task_id)
            if keep is None or e.snapshot_name not in (keep, f"{keep}-cbt")
        ]
    results = [await remove_one(ctx, vcenters, name, vcenter, moref) for name, vcenter, moref in keys]
    return all(results)


async def remove_one(ctx: Context, vcenters: VCenters, name: str, vcenter: str, vm_moref: str) -> bool:
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        entry = ledger.get(s, name, vcenter, vm_moref)
        if entry is None or entry.state not in ledger.OPEN:
            return True
        known, requested_at = entry.snapshot_moref, entry.requested_at
        if entry.state != "stuck":
            entry.state = "removing"
    timeout = ctx.settings.pipeline.snapshot_timeout
    try:
        removed = await asyncio.to_thread(_remove, vcenters.get(vcenter), vm_moref, name, known, timeout)
    except Exception as exc:  # any failure (vSphere, network, a bug) is recorded and retried
        _failed(ctx, name, vcenter, vm_moref, str(exc))
        return False
    with ctx.sessions.begin() as s:
        entry = ledger.get(s, name, vcenter, vm_moref)
        assert entry is not None
        # A create may be asked for until the task's deadline (snapshot_timeout after the intent)
        # and is waited for snapshot_timeout more: until then, "not there" may be "not yet".
        young = (now - requested_at).total_seconds() < 2 * timeout
        if not removed and known is None and young:
            # Asked for, not there yet: the create may still be running. Look again later.
            entry.state = "requested"
            entry.next_attempt_at = now + timedelta(seconds=ctx.settings.pipeline.cleanup_backoff)
            return False
        entry.state = "removed" if removed else "gone"
        entry.removed_at = now
        entry.last_error = None
        if removed and entry.run_id != "-":
            runlog.write(
                s, entry.run_id, f"{entry.vm_name}: snapshot {name} removed", now, task_id=entry.task_id
            )
        if entry.run_id != "-":
            tasks.finish_run_if_done(s, entry.run_id, now)  # the run may have waited for this removal
    ctx.relay.kick()
    log.info("snapshot %s of %s: %s", name, vm_moref, "removed" if removed else "not there")
    return True


def _remove(vc: VCenter, vm_moref: str, name: str, known: str | None, timeout: float) -> int:
    """Remove every snapshot of the VM with this name (or moref); how many were removed."""
    try:
        snaps = vc.vm(vm_moref).snapshots
    except NotFound:
        return 0  # the VM is gone, and its snapshots with it
    targets = [s.moref for s in snaps if s.name == name or s.moref == known]
    for moref in targets:
        vc.remove_snapshot(moref, timeout=timeout)
    return len(targets)


def _failed(ctx: Context, name: str, vcenter: str, vm_moref: str, error: str) -> None:
    now = ctx.clock()
    limit = ctx.settings.pipeline.cleanup_attempts
    with ctx.sessions.begin() as s:
        entry = ledger.get(s, name, vcenter, vm_moref)
        assert entry is not None
        entry.attempts += 1
        entry.last_error = error[:2000]
        delay = ctx.settings.pipeline.cleanup_backoff * 2 ** min(entry.attempts - 1, 6)
        entry.next_attempt_at = now + timedelta(seconds=delay)
        if entry.attempts >= limit:
            entry.state = "stuck"
            # The backoff keeps doubling, up to STUCK_RETRY between attempts.
            entry.next_attempt_at = now + min(STUCK_RETRY, timedelta(seconds=delay))
            raise_alert(
                s,
                key=f"snapshot-stuck:{name}:{vcenter}:{vm_moref}",  # morefs repeat across vCenters
                kind="snapshot-left-behind",
                severity="critical",
                vm_name=entry.vm_name,
                run_id=entry.run_id,
                now=now,
                message=(
                    f"vbm could not remove its snapshot {name!r} of VM {entry.vm_name}"
                    f" ({vm_moref}) on vCenter {entry.vcenter} after {entry.attempts} attempts:"
                    f" {error}. It keeps trying, at least every {STUCK_RETRY.seconds // 60} minutes;"
                    " remove it in vCenter (Snapshots > Delete) if it persists."
                ),
            )
        elif entry.state == "removing":
            entry.state = "created" if entry.snapshot_moref else "requested"
        if entry.run_id != "-":
            tasks.finish_run_if_done(s, entry.run_id, now)  # a failed removal no longer holds the run
    ctx.relay.kick()
    log.warning("removing snapshot %s of %s failed: %s", name, vm_moref, error)
