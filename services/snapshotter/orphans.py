"""On start: remove vbm snapshots that no live run owns.

The ledger covers every snapshot this vbm asked for, but a database restored from an older copy,
a crash of the whole host at the wrong moment or a manual import can leave vbm snapshots that no
open ledger entry explains. At start the snapshotter looks at every VM of every configured
vCenter: a snapshot that carries vbm's mark (`shared/catalog/marker.py`) and whose ledger entry
is missing, closed, or belongs to a task that is not snapshotting or transferring any more is
removed (and recorded as removed). A snapshot without the mark is not vbm's, whatever its name
(a user may call one `vbm-anything`): it is never touched. A removal that fails raises an alert
naming the VM.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from shared.catalog import audit, ledger, marker
from shared.catalog import tasks as state
from shared.catalog import vcenters as vcstore
from shared.catalog.alerts import raise_alert
from shared.db.models import SnapshotLedger, Task
from shared.model.audit import system
from shared.runtime.bus import Permanent
from shared.runtime.service import Context
from shared.vsphere import VCenter, VMInfo, VSphereError
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)

PREFIX = "vbm-"


def _owned(ctx: Context, name: str, vcenter: str, vm_moref: str) -> bool:
    """Whether a live task still owns this snapshot (then it is left to the pipeline)."""
    with ctx.sessions() as s:
        entry = ledger.get(s, name, vcenter, vm_moref)
        if entry is None or entry.state not in ledger.OPEN:
            return False
        task = s.get(Task, entry.task_id)
        return task is not None and task.state not in state.FINAL and task.phase in ("snapshot", "transfer")


def _record(ctx: Context, vcenter: str, vm: VMInfo, name: str, moref: str, error: str | None) -> None:
    now = ctx.clock()
    _ledger(ctx, vcenter, vm, name, moref, error, now)
    audit.try_append(
        ctx.sessions, actor=system(ctx.service), action="snapshot.cleanup",
        target=f"vm:{vcenter}/{vm.moref}", params={"snapshot": name, "vm_name": vm.name, "why": "orphaned"},
        result="ok" if error is None else f"error: {error}", at=now,
    )  # fmt: skip


def _ledger(
    ctx: Context, vcenter: str, vm: VMInfo, name: str, moref: str, error: str | None, now: datetime
) -> None:
    with ctx.sessions.begin() as s:
        entry = ledger.get(s, name, vcenter, vm.moref)
        if entry is None:
            entry = SnapshotLedger(
                snapshot_name=name,
                vm_moref=vm.moref,
                vcenter=vcenter,
                vm_name=vm.name,
                run_id="-",
                task_id="-",
                snapshot_moref=moref,
                state="requested",
                requested_at=now,
                attempts=0,
            )
            s.add(entry)
        if error is None:
            entry.state, entry.removed_at, entry.last_error = "removed", now, None
            return
        entry.attempts += 1
        entry.last_error = error[:2000]
        raise_alert(
            s,
            key=f"orphan:{name}:{vcenter}:{vm.moref}",  # morefs repeat across vCenters
            kind="snapshot-left-behind",
            severity="critical",
            vm_name=vm.name,
            now=now,
            message=f"vbm found its snapshot {name!r} on VM {vm.name} ({vm.moref}) on vCenter"
            f" {vcenter} with no backup running, and could not remove it: {error}."
            " Remove it in vCenter (Snapshots > Delete).",
        )


def _vcenter_names(ctx: Context) -> list[str]:
    with ctx.sessions() as s:
        return vcstore.names(s, ctx.settings)


async def sweep_orphans(ctx: Context, vcenters: VCenters, secret: bytes) -> int:
    """Remove orphaned vbm snapshots on every vCenter (configured or added through the API); how
    many were removed."""
    removed = 0
    timeout = ctx.settings.pipeline.snapshot_timeout
    for name in await asyncio.to_thread(_vcenter_names, ctx):
        try:
            vc: VCenter = vcenters.get(name)
            vms = await asyncio.to_thread(vc.list_vms)
        except (VSphereError, Permanent) as exc:
            log.warning("orphan sweep: vCenter %s unavailable (%s); skipped", name, exc)
            continue
        for vm in vms:
            for snap in vm.snapshots:
                if not snap.name.startswith(PREFIX):
                    continue
                if not marker.is_vbms(secret, name, vm.moref, snap.name, snap.description):
                    log.warning(
                        "VM %s has a snapshot named %r without vbm's mark: not vbm's, left alone",
                        vm.name,
                        snap.name,
                    )
                    continue
                if await asyncio.to_thread(_owned, ctx, snap.name, name, vm.moref):
                    continue
                try:
                    await asyncio.to_thread(vc.remove_snapshot, snap.moref, timeout=timeout)
                except VSphereError as exc:
                    await asyncio.to_thread(_record, ctx, name, vm, snap.name, snap.moref, str(exc))
                    continue
                await asyncio.to_thread(_record, ctx, name, vm, snap.name, snap.moref, None)
                log.warning("removed orphaned snapshot %s of VM %s", snap.name, vm.name)
                removed += 1
    ctx.relay.kick()
    return removed
