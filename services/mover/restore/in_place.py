"""Restore in place: write a restore point's disks back over the original VM's, in full through the
datastore HTTP API or, method fast, only the windows that differ through hot-add."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.mover.hotadd import HotAddError, Written, device_path, wait_device, write_differences
from services.mover.restore.common import (
    VC,
    VCENTER_ERRORS,
    Attempt,
    RestoreFailed,
    gib,
    not_found,
    open_point,
)
from services.mover.restore.upload import upload_disk
from shared.contracts import RestoreTarget
from shared.db.models import Restore
from shared.repo import RepoError, Repository
from shared.repo.manifest import DiskEntry, RestorePoint
from shared.runtime.bus import Permanent
from shared.vsphere import Placement, VCenter, VSphereError
from shared.vsphere.datastore import DownloadError

log = logging.getLogger(__name__)


async def restore_in_place(
    attempt: Attempt,
    vc: VC,
    target: RestoreTarget,
    rp_id: str,
    location: str,
    moref: str,
    method: str = "full",
) -> str:
    """Write the restore point's disks back over the original VM's: in full through the datastore
    HTTP API (method full), or only the windows that differ through hot-add (method fast,
    `services/mover/hotadd.py`; what was written is recorded in the restore's `target.written`).

    The VM is powered off first and must have no snapshots (its base disks are rewritten). The
    writes bypass the VM, so CBT did not see them: CBT is turned off and on afterwards, which
    starts a new change epoch, and the next backup of the VM is a full. The VM is powered on
    again if it was on (or if asked). A failure after the first byte written leaves the VM off
    with partly restored disks, and says so: nothing can be removed to undo it.
    """
    repo, rp = await open_point(attempt, rp_id, location)
    try:
        vm = await vc.call(VCenter.vm, moref)
    except Permanent as exc:
        if not not_found(exc):
            raise
        raise RestoreFailed(f"VM {target.name} ({moref}) no longer exists: restore it as a new VM") from None
    if vm.snapshots:
        names = ", ".join(sn.name for sn in vm.snapshots)
        raise RestoreFailed(
            f"VM {vm.name} has {len(vm.snapshots)} snapshot(s) ({names}): an in-place restore rewrites its"
            " base disks; delete or consolidate the snapshots first"
        )
    now_disks = {d.key: d for d in vm.disks}
    plan = []
    for disk in sorted(rp.disks, key=lambda d: d.key):
        current = now_disks.get(disk.key)
        if current is None:
            raise RestoreFailed(f"VM {vm.name} has no disk {disk.key} any more: restore it as a new VM")
        if current.capacity != disk.capacity:
            raise RestoreFailed(
                f"disk {disk.key} of VM {vm.name} is {current.capacity} bytes now, {disk.capacity} in the"
                " restore point (resized since): restore it as a new VM"
            )
        plan.append((disk, current))
    proxy = ""
    if method == "fast":
        proxy = await _proxy(vc)
        for _disk, current in plan:
            device_path(attempt.deps.ctx.settings.hotadd.device_dir, current.uuid)  # fails early if none
    await asyncio.to_thread(attempt.update, phase="powering_off")
    was_on = await vc.call(VCenter.power_off, moref)
    await asyncio.to_thread(attempt.update, phase="uploading")
    http = attempt.deps.client(target.vcenter)
    try:
        if method == "fast":
            await _in_place_fast(attempt, vc, proxy, repo, rp, plan)
        else:
            for disk, current in plan:
                place = Placement(vm.datacenter, current.datastore, 0, vm.name, "", "", None, None)
                await upload_disk(attempt, http, place, repo, rp, disk, current.flat_path)
    except (RestoreFailed, DownloadError, RepoError, HotAddError, VSphereError, *VCENTER_ERRORS) as exc:
        raise RestoreFailed(
            f"{exc}; VM {vm.name}'s disks are partly overwritten and it is left powered off:"
            " run the in-place restore again, or restore as a new VM"
        ) from None
    if vm.cbt_enabled:
        await asyncio.to_thread(attempt.update, phase="resetting_cbt")
        await vc.call(VCenter.set_cbt, moref, False)
        await vc.call(VCenter.set_cbt, moref, True)
    if was_on or target.power_on:
        await asyncio.to_thread(attempt.update, phase="powering_on")
        await vc.call(VCenter.power_on, moref)
    return moref


async def _proxy(vc: VC) -> str:
    """The moref of this vCenter's hot-add proxy (vbm's own VM), which must be powered on."""
    name = vc.settings.hotadd_proxy
    if not name:
        raise RestoreFailed(
            f"a fast in-place restore needs vcenters[{vc.settings.name}].hotadd_proxy: the VM vbm runs in"
        )
    try:
        info = await vc.call(VCenter.vm if name.startswith("vm-") else VCenter.find_vm, name)
    except Permanent as exc:
        if not not_found(exc):
            raise
        raise RestoreFailed(f"hot-add proxy VM {name!r} is not in vCenter {vc.settings.name}") from None
    if info.power_state != "poweredOn":
        raise RestoreFailed(
            f"hot-add proxy VM {info.name} is {info.power_state}: it must be the running VM vbm is in"
        )
    return info.moref


async def _in_place_fast(
    attempt: Attempt, vc: VC, proxy: str, repo: Repository, rp: RestorePoint, plan: list[Any]
) -> None:
    settings = attempt.deps.ctx.settings.hotadd
    total = Written()
    for disk, current in plan:
        await asyncio.to_thread(attempt.created, "hotadd_proxy", proxy)
        await asyncio.to_thread(attempt.created, "hotadd_disk", current.file)
        await vc.call(VCenter.attach_disk, proxy, current.file, disk.capacity)
        try:
            device = await wait_device(
                device_path(settings.device_dir, current.uuid), settings.settle_seconds
            )

            def progress(n: int) -> None:
                attempt.done += n

            done = await write_differences(repo, rp, disk, device, progress, await _changed(vc, rp, disk))
        finally:
            await asyncio.shield(vc.call(VCenter.detach_disk, proxy, current.file))
        await asyncio.to_thread(attempt.update, created={})
        log.info(
            "restore %s: disk %d of %s: %d windows unchanged by CBT, %d compared, %d written (%s)",
            attempt.restore_id, disk.key, rp.vm_name, done.skipped, done.windows, done.written,
            gib(done.bytes),
        )  # fmt: skip
        total.windows += done.windows
        total.written += done.written
        total.bytes += done.bytes
        total.skipped += done.skipped
    with attempt.deps.ctx.sessions.begin() as s:
        row = s.get(Restore, attempt.restore_id)
        if row is not None and row.generation == attempt.generation:
            written = {"skipped": total.skipped, "windows": total.windows, "written": total.written,
                       "bytes": total.bytes}  # fmt: skip
            row.target = {**row.target, "written": written}


async def _changed(vc: VC, rp: RestorePoint, disk: DiskEntry) -> list[tuple[int, int]] | None:
    """Areas of the (powered-off) VM's disk changed since the restore point, by CBT; None when
    CBT cannot say (off, reset since, no change id recorded): then every window is compared."""
    if not disk.change_id or not rp.vm_moref:
        return None
    try:
        return await vc.call(
            VCenter.changed_areas, rp.vm_moref, None, disk.key, disk.capacity, disk.change_id
        )
    except VCENTER_ERRORS as exc:
        log.info(
            "disk %d of %s: CBT cannot say what changed (%s); comparing every window",
            disk.key,
            rp.vm_name,
            exc,
        )
        return None
