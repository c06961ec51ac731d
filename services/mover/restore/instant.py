"""Instant recovery: run a VM from the restore point's files published as a datastore; then migrate
it to production storage or stop it (the instant actions)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from services.mover.deps import Deps
from services.mover.restore.common import (
    VC,
    Attempt,
    RestoreFailed,
    datacenter_of,
    open_point,
    register,
    vm_files,
)
from shared.catalog.alerts import raise_alert
from shared.contracts import Event, RestoreRequested, RestoreTarget
from shared.db.models import Restore
from shared.pipeline.restores import clean
from shared.repo import Repository
from shared.repo.manifest import DiskEntry, RestorePoint
from shared.vsphere import VCenter

log = logging.getLogger(__name__)


async def restore_instant(attempt: Attempt, vc: VC, target: RestoreTarget, rp_id: str, location: str) -> str:
    """Instant recovery: publish the restore point's files in a directory that vCenter mounts as a
    datastore, register the VM from there and power it on; no disk is copied to production.

    The directory (`<instant root>/<restore id>/<name>/`) holds the disks materialized sparsely
    (only non-zero windows are written; the rest are holes), their descriptors, the NVRAM and the
    rewritten `.vmx`. It is mounted as `vbm-instant-<id>`: an NFS export when `instant.nfs_server`
    is set, else a local datastore (vCenter sees vbm's disk: the lab). The VM then runs on the
    backup host's storage until it is migrated to production (Storage vMotion, RelocateVM_Task)
    or stopped (powered off, removed, the datastore unmounted, the directory deleted).
    """
    ctx = attempt.deps.ctx
    repo, rp = await open_point(attempt, rp_id, location)
    files = await vm_files(repo, rp, target.name, target.network)
    datacenter = target.datacenter or await datacenter_of(vc, rp)
    where = await vc.call(
        VCenter.placement, datacenter, "", target.name,
        folder=target.folder, resource_pool=target.resource_pool, network=target.network,
    )  # fmt: skip
    name = target.name
    root = ctx.settings.instant_root / attempt.restore_id
    await asyncio.to_thread(attempt.created, "instant_dir", str(root))
    await asyncio.to_thread(attempt.update, phase="materializing")
    folder = root / name
    if folder.resolve().parent != root.resolve():  # refused at the door too (restores.vm_name_problem)
        raise RestoreFailed(f"{name!r} cannot be used as a folder name for instant recovery")
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    for disk, flat, desc, text in files.disks:
        await _materialize(attempt, repo, rp, disk, folder / flat)
        await asyncio.to_thread((folder / desc).write_text, text)
    if files.nvram is not None:
        await asyncio.to_thread((folder / f"{name}.nvram").write_bytes, files.nvram)
    await asyncio.to_thread((folder / f"{name}.vmx").write_text, files.vmx)

    await asyncio.to_thread(attempt.update, phase="mounting")
    ds_name = f"vbm-instant-{attempt.restore_id.rsplit('-', 1)[-1]}"
    for key, value in (
        ("datacenter", datacenter),
        ("instant_pool", where.pool),
        ("instant_host", where.host or ""),
    ):
        await asyncio.to_thread(attempt.created, key, value)
    await asyncio.to_thread(attempt.created, "instant_datastore", ds_name)
    await vc.call(VCenter.mount_datastore, where, ds_name, str(root), ctx.settings.instant.nfs_server)
    vmx_path = f"[{ds_name}] {name}/{name}.vmx"
    await asyncio.to_thread(attempt.created, "vmx", vmx_path)
    await asyncio.to_thread(attempt.update, phase="registering")

    moref = await register(attempt, vc, where, vmx_path)
    if target.network:
        await vc.call(VCenter.connect_nics, moref, target.network)
    await asyncio.to_thread(attempt.update, phase="powering_on")
    await vc.call(VCenter.power_on, moref)
    return moref


async def _materialize(
    attempt: Attempt, repo: Repository, rp: RestorePoint, disk: DiskEntry, path: Any
) -> None:
    """Write a disk image as a sparse file: its size set, only non-zero windows written."""
    fd = await asyncio.to_thread(os.open, str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    windows = iter(disk.windows())

    async def worker() -> None:
        for offset, length, cid in windows:  # one iterator shared by the workers
            if cid is not None:
                data = await repo.get_chunk(cid, rp.id)
                await asyncio.to_thread(os.pwrite, fd, data, offset)
            attempt.done += length

    # no fsync: the published copy is a working copy the VM runs from until it is migrated or
    # stopped; a crash of the backup host ends that VM anyway, and the restore point is intact
    workers = [asyncio.ensure_future(worker()) for _ in range(4)]
    try:
        await asyncio.to_thread(os.ftruncate, fd, disk.capacity)
        await asyncio.gather(*workers)
    finally:
        for w in workers:  # every write ends before the file descriptor is closed
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await asyncio.to_thread(os.close, fd)


def _set_created(ctx: Any, restore_id: str, created: dict[str, str], phase: str) -> None:
    with ctx.sessions.begin() as s:
        row = s.get(Restore, restore_id)
        if row is not None:
            row.created, row.phase = created, phase


async def instant_action(event: RestoreRequested, deps: Deps) -> Sequence[Event]:
    """Migrate a running instant VM to production, or stop it; the restore row says the outcome."""
    ctx = deps.ctx
    with ctx.sessions() as s:
        row = s.get(Restore, event.restore_id)
        if row is None or row.mode != "instant" or row.phase not in ("migrating", "stopping"):
            return []
        created, vcenter, moref, name = (
            dict(row.created),
            row.vcenter,
            row.vm_moref,
            str(row.target.get("name")),
        )
    error: str | None = None
    try:
        vc = VC(deps.vcenters, vcenter)
        if event.action == "migrate" and moref and event.datastore:
            await vc.call(VCenter.relocate, moref, event.datastore)
            # the VM's files are on production now: only the published copy and its mount remain,
            # and that is recorded at once, so no later clean-up can touch the migrated VM
            created = {k: v for k, v in created.items() if k not in ("vm", "vmx")}
            await asyncio.to_thread(_set_created, ctx, event.restore_id, created, "migrating")
        await vc.call(clean, created)
    except Exception as exc:  # any failure must leave the row in a usable phase
        error = str(exc) or type(exc).__name__
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        row = s.get(Restore, event.restore_id)
        if row is None:
            return []
        if error is None:
            row.phase = "migrated" if event.action == "migrate" else "stopped"
            row.created = {}
            if event.action == "stop":
                row.vm_moref = None
        else:
            migrated = event.action == "migrate" and "vm" not in row.created
            # still running from the backup store (or, once moved, only the copy is left to
            # remove: a stop then only unmounts); the error says why
            row.phase = "instant"
            row.error = f"{event.action} failed: {error}" + (
                "; the VM is on production storage already, a stop now only removes the published copy"
                if migrated
                else ""
            )
            raise_alert(
                s,
                key=f"instant-{event.action}:{row.id}:{now.isoformat()}",
                kind="restore_failed",
                severity="error",
                message=f"instant VM {name}: {event.action} failed: {error}",
                now=now,
                vm_name=name,
            )
        row.updated_at = now
    ctx.relay.kick()
    log.info("instant recovery %s: %s %s", event.restore_id, event.action, "done" if error is None else error)
    return []
