"""Restore as a new VM: check the target and the room on its datastore, create the folder, upload
the disks (thin ones through NFC) and files, register, connect the NICs, power on."""

from __future__ import annotations

import asyncio

from services.mover.restore.common import (
    VC,
    VCENTER_ERRORS,
    Attempt,
    RestoreFailed,
    datacenter_of,
    gib,
    open_point,
    register,
    vm_files,
)
from services.mover.restore.upload import data_grains, import_thin, put_small, upload_disk
from shared.contracts import RestoreTarget
from shared.repo.manifest import DiskEntry
from shared.vsphere import VCenter
from shared.vsphere.vmdk import GRAIN, StreamOptimized

HEADROOM = 64 << 20  # beyond the disks: the small files and vSphere's own (logs, swap is not made)


async def restore_new_vm(attempt: Attempt, vc: VC, target: RestoreTarget, rp_id: str, location: str) -> str:
    deps = attempt.deps
    repo, rp = await open_point(attempt, rp_id, location)
    datacenter = target.datacenter or await datacenter_of(vc, rp)
    where = await vc.call(
        VCenter.placement,
        datacenter,
        target.datastore,
        target.name,
        folder=target.folder,
        resource_pool=target.resource_pool,
        network=target.network,
    )
    files = await vm_files(repo, rp, target.name, target.network)
    thin, thick = split_by_format(files.disks, target.disk_format)
    plans = {d[0].key: StreamOptimized(d[0].capacity, await data_grains(repo, rp, d[0])) for d in thin}
    data = sum(d[0].capacity for d in thick) + sum(len(p.grains) * GRAIN for p in plans.values())
    need = data + sum(f.size for f in rp.files if f.disk_key is None) + HEADROOM
    if where.free < need:
        how = "thin disks hold their data, thick ones" if thin else "its disks are thick: they are"
        raise RestoreFailed(
            f"datastore {where.datastore} has {gib(where.free)} free; restoring {rp.vm_name} needs"
            f" {gib(need)} ({how} written in full): free space or choose another datastore"
        )
    name = target.name
    folder = f"[{where.datastore}] {name}"
    try:
        await vc.call(VCenter.make_directory, datacenter, folder)
    except VCENTER_ERRORS as exc:
        raise RestoreFailed(
            f"cannot create {folder}/ ({exc}): a folder of that name exists on the datastore;"
            " choose another name or remove it"
        ) from None
    await asyncio.to_thread(attempt.created, "datacenter", datacenter)
    await asyncio.to_thread(attempt.created, "folder", folder)

    await asyncio.to_thread(attempt.update, phase="uploading")
    http = deps.client(target.vcenter)
    vmx_path = f"{folder}/{name}.vmx"
    await asyncio.to_thread(attempt.created, "vmx", vmx_path)
    if thin:
        disks = [(d[0], f"{folder}/{d[2]}", plans[d[0].key]) for d in thin]
        await import_thin(attempt, vc, http, where, repo, rp, vmx_path, disks)
    for disk, flat, desc, text in thick:
        await upload_disk(attempt, http, where, repo, rp, disk, f"{name}/{flat}")
        await put_small(http, where, f"{name}/{desc}", text.encode())
    if files.nvram is not None:
        await put_small(http, where, f"{name}/{name}.nvram", files.nvram)
    await put_small(http, where, f"{name}/{name}.vmx", files.vmx.encode())

    await asyncio.to_thread(attempt.update, phase="registering")

    moref = await register(attempt, vc, where, vmx_path)
    if target.network:
        await vc.call(VCenter.connect_nics, moref, target.network)
    if target.power_on:
        await asyncio.to_thread(attempt.update, phase="powering_on")
        await vc.call(VCenter.power_on, moref)
    return moref


Disk = tuple[DiskEntry, str, str, str]  # the disk, its flat file, its descriptor file and text


def split_by_format(disks: list[Disk], disk_format: str) -> tuple[list[Disk], list[Disk]]:
    """The disks written thin (through NFC) and those written thick (flat, in full, with their
    descriptor): as the source was (`as_source`), or all of them one way. A disk made thick from
    a thin source has its descriptor's ddb.thinProvisioned line taken out (the rest is kept)."""
    if disk_format == "as_source":
        return [d for d in disks if _thin(d[3])], [d for d in disks if not _thin(d[3])]
    if disk_format == "thin":
        return list(disks), []
    return [], [(disk, flat, desc, thick_descriptor(text)) for disk, flat, desc, text in disks]


def thick_descriptor(text: str) -> str:
    """`text` without the line that says the disk is thin."""
    return "".join(line for line in text.splitlines(keepends=True) if not _thin_line(line))


def _thin_line(line: str) -> bool:
    return line.replace(" ", "").replace("\t", "").strip().lower() == 'ddb.thinprovisioned="1"'


def _thin(descriptor_text: str) -> bool:
    """Whether the backed-up disk was thin (its descriptor says ddb.thinProvisioned = "1")."""
    return any(_thin_line(line) for line in descriptor_text.splitlines())
