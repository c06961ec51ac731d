"""Restore as a new VM: check the target, upload the disks and files, register, power on.

Steps (phases of the `restores` row, see docs/design.md "Restore"):

1. checking: the restore point loads from its repository; the target resolves in vCenter
   (datacenter, datastore, folder, resource pool, network) and no VM has the new name; the
   datastore has room for the disks written in full; the folder `[ds] <name>/` is created (it
   must not exist). From here on, what was created is recorded in the row *before* the next
   step, so a crash or a failure can always remove it.
2. uploading: per disk, the flat image streamed from the repository (every chunk verified)
   with one HTTP PUT to `<name>[_N]-flat.vmdk`, then its descriptor pointing at it; then the
   `.nvram` and the `.vmx`, rewritten for the new VM (name, disk and NVRAM files, no UUIDs or
   generated MACs, CBT off, NICs on the chosen network). A cut upload is retried from the start
   of that file (an HTTP upload cannot resume).
3. registering: `RegisterVM_Task` into the folder and resource pool; the NICs are connected to
   the chosen network through the API as well.
4. powering_on, when asked.

Any failure or a cancel removes what was made (the VM if registered, else the folder) and ends
the restore `failed` (with the reason) or `cancelled`; a redelivered request (the mover died)
removes the previous attempt's leftovers and starts over. Every write to the row is fenced by
the attempt's generation, so a mover that was given up on cannot overwrite a newer attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from services.mover.handlers import Deps
from services.mover.hotadd import HotAddError, Written, device_path, wait_device, write_differences
from shared import __version__
from shared.catalog.alerts import raise_alert
from shared.catalog.reports import sign, signing_key
from shared.catalog.restores import FINAL, alert_failed, finish_run
from shared.clock import aware
from shared.contracts import Event, RestoreDone, RestoreRequested, RestoreTarget
from shared.db.models import Restore, RestoreReport
from shared.pipeline.restores import clean
from shared.repo import RepoError, Repository, read_disk, read_file
from shared.repo.locations import Credentials, opened
from shared.repo.manifest import DiskEntry, RestorePoint
from shared.runtime.bus import Delivery
from shared.runtime.outbox import stage
from shared.vsphere import NotFound, Placement, VCenter, VSphereError
from shared.vsphere.datastore import DownloadError
from shared.vsphere.vmdk import GRAIN, StreamOptimized, grain_mask, grain_runs, grains_with_data, mask_runs
from shared.vsphere.vmx import descriptor, disk_files, restore_descriptor, restore_vmx

log = logging.getLogger(__name__)
T = TypeVar("T")

UPLOAD_ATTEMPTS = 3
HEADROOM = 64 << 20  # beyond the disks: the small files and vSphere's own (logs, swap is not made)


class RestoreFailed(Exception):
    """The restore cannot go on; the message says why and what to do."""


class Superseded(Exception):
    """A newer attempt (or the watchdog) owns this restore now."""


@dataclass
class Attempt:
    deps: Deps
    restore_id: str
    generation: int
    total: int
    done: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    repos: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)  # closed at the end
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    _last: tuple[float, int] = (0.0, 0)

    def update(self, **values: Any) -> None:
        """Write to the row if this attempt still owns it (else raise Superseded)."""
        ctx = self.deps.ctx
        with ctx.sessions.begin() as s:
            row = s.get(Restore, self.restore_id)
            if row is None or row.generation != self.generation or row.state in FINAL:
                raise Superseded(self.restore_id)
            now = ctx.clock()
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now
            row.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.transfer_stall)
            if row.cancel_requested:
                self.loop.call_soon_threadsafe(self.cancelled.set)

    def created(self, what: str, value: str) -> None:
        ctx = self.deps.ctx
        with ctx.sessions.begin() as s:
            row = s.get(Restore, self.restore_id)
            if row is None or row.generation != self.generation:
                raise Superseded(self.restore_id)
            row.created = {**row.created, what: value}

    async def report(self) -> None:
        """Every second: progress, rate, deadline, and whether a cancel was asked for."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            last_t, last_done = self._last
            rate = (self.done - last_done) / (now - last_t) if last_t else 0.0
            self._last = (now, self.done)
            await asyncio.to_thread(self.update, bytes_done=self.done, rate=max(0.0, rate))


async def on_restore_requested(event: RestoreRequested, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    if event.action != "start":
        return await instant_action(event, deps)
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        row = s.get(Restore, event.restore_id)
        if row is None or row.state in FINAL:
            return []
        alive = timedelta(seconds=ctx.settings.pipeline.ack_wait / 2)
        if row.state == "running" and aware(row.updated_at) > now - alive:
            # another attempt updates the row every second: this is a duplicate or re-sent
            # request. The bus redelivers a request only `ack_wait` after its mover went quiet,
            # so a redelivery after a crash finds the row quiet for longer, and takes over.
            return []
        if row.cancel_requested and not row.created:  # cancelled before it started: nothing to undo
            row.state, row.phase, row.error = "cancelled", "done", "cancelled before it started"
            row.finished_at = row.updated_at = now
            stage(
                s,
                RestoreDone(
                    occurred_at=now, restore_id=row.id, restore_point_id=row.restore_point_id,
                    state="cancelled", vm_name=str(row.target.get("name", "")), error=row.error,
                ),
                now,
            )  # fmt: skip
            finish_run(s, row, now)
            ctx.relay.kick()
            return []
        leftovers = dict(row.created)
        row.generation += 1
        row.state, row.phase = "running", "checking"
        row.started_at = row.started_at or now
        row.updated_at = now
        row.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.transfer_stall)
        generation, total = row.generation, row.bytes_total
        target = RestoreTarget.model_validate(
            {k: v for k, v in row.target.items() if k in RestoreTarget.model_fields}
        )
        rp_id, location, mode = row.restore_point_id, row.repository, row.mode
        original = str(row.target.get("vm_moref", ""))
        method = str(row.target.get("method", "full"))
    attempt = Attempt(deps, event.restore_id, generation, total)
    try:
        vc = deps.vcenters.get(target.vcenter)
    except KeyError:
        return _end(attempt, "failed", f"vCenter {target.vcenter!r} is not configured", target, rp_id)
    if leftovers:  # an earlier attempt died mid-way: remove what it made, then start over
        log.info("restore %s: removing the leftovers of an earlier attempt: %s", event.restore_id, leftovers)
        await _clean(vc, leftovers)
        with contextlib.suppress(Superseded):
            await asyncio.to_thread(attempt.update, created={})
    if mode == "in_place":
        work = asyncio.create_task(_in_place(attempt, vc, target, rp_id, location, original, method))
    elif mode == "test":
        work = asyncio.create_task(_restore_test(attempt, vc, target, rp_id, location))
    elif mode == "instant":
        work = asyncio.create_task(_instant(attempt, vc, target, rp_id, location))
    else:
        work = asyncio.create_task(_restore(attempt, vc, target, rp_id, location))
    reporter = asyncio.create_task(attempt.report())
    stop = asyncio.create_task(attempt.cancelled.wait())
    try:
        await asyncio.wait((work, stop, reporter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (stop, reporter, work):
            t.cancel()
        await asyncio.gather(stop, reporter, work, return_exceptions=True)
        await attempt.repos.aclose()
    reporter_error = reporter.exception() if reporter.done() and not reporter.cancelled() else None
    if isinstance(reporter_error, Superseded):
        log.warning(
            "restore %s: superseded (attempt %d); leaving it to the newer owner", event.restore_id, generation
        )
        return []
    error: str | None = None
    state = "succeeded"
    vm_moref: str | None = None
    if reporter_error is not None and not (work.done() and not work.cancelled() and work.exception() is None):
        state, error = "failed", f"progress could not be recorded: {reporter_error}"
    elif attempt.cancelled.is_set() and not (
        work.done() and not work.cancelled() and work.exception() is None
    ):
        state, error = "cancelled", "cancelled by request"
    elif work.cancelled():
        state, error = "cancelled", "cancelled"
    elif (exc := work.exception()) is not None:
        if isinstance(exc, Superseded):
            return []
        state, error = "failed", _reason(exc)
    else:
        vm_moref = work.result()
    if state != "succeeded":
        with contextlib.suppress(Superseded):
            await asyncio.to_thread(attempt.update, phase="cleaning_up")
        created = _created(attempt)
        try:
            await _clean(vc, created)
        except VSphereError as exc:
            error = f"{error}; and cleaning up failed: {exc} (remove {created} by hand)"
    if mode == "in_place" and state != "succeeded" and error and "partly overwritten" not in error:
        error += (
            f"; VM {target.name}'s disks may be partly overwritten and it may be left powered off"
            " (and CBT off): run the in-place restore again, or restore as a new VM"
        )
    return _end(attempt, state, error, target, rp_id, vm_moref, instant=mode == "instant")


def _created(attempt: Attempt) -> dict[str, str]:
    with attempt.deps.ctx.sessions() as s:
        row = s.get(Restore, attempt.restore_id)
        return dict(row.created) if row is not None else {}


async def _clean(vc: VCenter, created: dict[str, str]) -> None:
    """Remove a half-made restore: the VM (with its files) if registered, then the folder."""
    removed = await asyncio.to_thread(clean, vc, created)
    if removed:
        log.info("restore clean-up removed %s", ", ".join(removed))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RestoreFailed | VSphereError | DownloadError | RepoError):
        return str(exc)
    log.error("restore failed unexpectedly", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def _end(
    attempt: Attempt,
    state: str,
    error: str | None,
    target: RestoreTarget,
    rp_id: str,
    vm_moref: str | None = None,
    *,
    instant: bool = False,
) -> Sequence[Event]:
    ctx = attempt.deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        row = s.get(Restore, attempt.restore_id)
        if row is None or row.generation != attempt.generation or row.state in FINAL:
            return []
        row.state, row.phase, row.error = (
            state,
            "instant" if instant and state == "succeeded" else "done",
            error,
        )
        row.vm_moref = vm_moref
        row.finished_at = row.updated_at = now
        row.bytes_done = attempt.done if state != "succeeded" else row.bytes_total
        row.rate = 0.0
        if not (instant and state == "succeeded"):
            row.created = {}  # done, or removed above (or named in the error)
        # a running instant VM keeps `created`: stopping it removes those things
        stage(
            s,
            RestoreDone(
                occurred_at=now,
                restore_id=row.id,
                restore_point_id=rp_id,
                state=state,
                vm_name=target.name,
                vm_moref=vm_moref,
                error=error,
            ),
            now,
        )
        finish_run(s, row, now)
        if state == "failed":
            alert_failed(s, row, error, now)
    ctx.relay.kick()
    log.info("restore %s %s%s", attempt.restore_id, state, f": {error}" if error else "")
    return []


async def _open_point(attempt: Attempt, rp_id: str, location: str) -> tuple[Repository, RestorePoint]:
    """The restore point, its repository open until the attempt ends."""
    try:
        credentials = Credentials.of(attempt.deps.ctx.settings)
        repo = await attempt.repos.enter_async_context(opened(location, credentials))
        return repo, await repo.load(rp_id)
    except RepoError as exc:
        raise RestoreFailed(f"cannot read restore point {rp_id} from {location}: {exc}") from None


@dataclass
class VMFiles:
    """The files of a restored copy, named for it: per disk (in key order) the flat file and the
    descriptor (with its text), then the NVRAM (if backed up) and the rewritten `.vmx`."""

    disks: list[tuple[DiskEntry, str, str, str]]
    nvram: bytes | None
    vmx: str


async def _vm_files(repo: Repository, rp: RestorePoint, name: str, network: str | None) -> VMFiles:
    vmx_entry = next((f for f in rp.files if f.path.endswith(".vmx")), None)
    if vmx_entry is None:
        raise RestoreFailed(f"restore point {rp.id} holds no .vmx: it cannot be restored as a VM")
    vmx_text = (await read_file(repo, rp, vmx_entry)).decode("utf-8", "replace")
    renames: dict[str, str] = {}
    disks = []
    for index, disk in enumerate(sorted(rp.disks, key=lambda d: d.key)):
        stem = name if index == 0 else f"{name}_{index}"
        old_desc = _descriptor_path(disk)
        renames[old_desc.rsplit("/", 1)[-1]] = f"{stem}.vmdk"
        entry = next((f for f in rp.files if f.path == old_desc), None)
        if entry is not None:
            raw = (await read_file(repo, rp, entry)).decode("utf-8", "replace")
            text = restore_descriptor(raw, f"{stem}-flat.vmdk")
        else:
            text = descriptor(disk.capacity, f"{stem}-flat.vmdk")
        disks.append((disk, f"{stem}-flat.vmdk", f"{stem}.vmdk", text))
    nvram_entry = next((f for f in rp.files if f.path.endswith(".nvram")), None)
    nvram = await read_file(repo, rp, nvram_entry) if nvram_entry is not None else None
    listed = disk_files(vmx_text)
    missing = tuple(dev for dev, f in listed.items() if f.rsplit("/", 1)[-1] not in renames)
    if missing:  # e.g. independent disks, which snapshots do not capture
        log.warning("restore of %s: the .vmx lists disks not in the backup, left out: %s", rp.id, missing)
    return VMFiles(disks, nvram, restore_vmx(vmx_text, name, renames, f"{name}.nvram", network, drop=missing))


async def _restore(attempt: Attempt, vc: VCenter, target: RestoreTarget, rp_id: str, location: str) -> str:
    deps = attempt.deps
    repo, rp = await _open_point(attempt, rp_id, location)
    datacenter = target.datacenter or await _datacenter_of(vc, rp)
    where = await asyncio.to_thread(
        vc.placement,
        datacenter,
        target.datastore,
        target.name,
        folder=target.folder,
        resource_pool=target.resource_pool,
        network=target.network,
    )
    files = await _vm_files(repo, rp, target.name, target.network)
    thin = [d for d in files.disks if _thin(d[3])]
    thick = [d for d in files.disks if not _thin(d[3])]
    plans = {d[0].key: StreamOptimized(d[0].capacity, await _data_grains(repo, rp, d[0])) for d in thin}
    data = sum(d[0].capacity for d in thick) + sum(len(p.grains) * GRAIN for p in plans.values())
    need = data + sum(f.size for f in rp.files if f.disk_key is None) + HEADROOM
    if where.free < need:
        how = "thin disks hold their data, thick ones" if thin else "its disks are thick: they are"
        raise RestoreFailed(
            f"datastore {where.datastore} has {_gib(where.free)} free; restoring {rp.vm_name} needs"
            f" {_gib(need)} ({how} written in full): free space or choose another datastore"
        )
    name = target.name
    folder = f"[{where.datastore}] {name}"
    try:
        await asyncio.to_thread(vc.make_directory, datacenter, folder)
    except VSphereError as exc:
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
        await _import_thin(attempt, vc, http, where, repo, rp, vmx_path, disks)
    for disk, flat, desc, text in thick:
        await _upload_disk(attempt, http, where, repo, rp, disk, f"{name}/{flat}")
        await _put_small(http, where, f"{name}/{desc}", text.encode())
    if files.nvram is not None:
        await _put_small(http, where, f"{name}/{name}.nvram", files.nvram)
    await _put_small(http, where, f"{name}/{name}.vmx", files.vmx.encode())

    await asyncio.to_thread(attempt.update, phase="registering")

    moref = await _register(attempt, vc, where, vmx_path)
    if target.network:
        await asyncio.to_thread(vc.connect_nics, moref, target.network)
    if target.power_on:
        await asyncio.to_thread(attempt.update, phase="powering_on")
        await asyncio.to_thread(vc.power_on, moref)
    return moref


async def _in_place(
    attempt: Attempt,
    vc: VCenter,
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
    repo, rp = await _open_point(attempt, rp_id, location)
    try:
        vm = await asyncio.to_thread(vc.vm, moref)
    except NotFound:
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
    was_on = await asyncio.to_thread(vc.power_off, moref)
    await asyncio.to_thread(attempt.update, phase="uploading")
    http = attempt.deps.client(target.vcenter)
    try:
        if method == "fast":
            await _in_place_fast(attempt, vc, proxy, repo, rp, plan)
        else:
            for disk, current in plan:
                place = Placement(vm.datacenter, current.datastore, 0, vm.name, "", "", None, None)
                await _upload_disk(attempt, http, place, repo, rp, disk, current.flat_path)
    except (RestoreFailed, DownloadError, RepoError, HotAddError, VSphereError) as exc:
        raise RestoreFailed(
            f"{exc}; VM {vm.name}'s disks are partly overwritten and it is left powered off:"
            " run the in-place restore again, or restore as a new VM"
        ) from None
    if vm.cbt_enabled:
        await asyncio.to_thread(attempt.update, phase="resetting_cbt")
        await asyncio.to_thread(vc.set_cbt, moref, False)
        await asyncio.to_thread(vc.set_cbt, moref, True)
    if was_on or target.power_on:
        await asyncio.to_thread(attempt.update, phase="powering_on")
        await asyncio.to_thread(vc.power_on, moref)
    return moref


async def _proxy(vc: VCenter) -> str:
    """The moref of this vCenter's hot-add proxy (vbm's own VM), which must be powered on."""
    name = vc.settings.hotadd_proxy
    if not name:
        raise RestoreFailed(
            f"a fast in-place restore needs vcenters[{vc.settings.name}].hotadd_proxy: the VM vbm runs in"
        )
    try:
        info = await asyncio.to_thread(vc.vm if name.startswith("vm-") else vc.find_vm, name)
    except NotFound:
        raise RestoreFailed(f"hot-add proxy VM {name!r} is not in vCenter {vc.settings.name}") from None
    if info.power_state != "poweredOn":
        raise RestoreFailed(
            f"hot-add proxy VM {info.name} is {info.power_state}: it must be the running VM vbm is in"
        )
    return info.moref


async def _in_place_fast(
    attempt: Attempt, vc: VCenter, proxy: str, repo: Repository, rp: RestorePoint, plan: list[Any]
) -> None:
    settings = attempt.deps.ctx.settings.hotadd
    total = Written()
    for disk, current in plan:
        await asyncio.to_thread(attempt.created, "hotadd_proxy", proxy)
        await asyncio.to_thread(attempt.created, "hotadd_disk", current.file)
        await asyncio.to_thread(vc.attach_disk, proxy, current.file, disk.capacity)
        try:
            device = await wait_device(
                device_path(settings.device_dir, current.uuid), settings.settle_seconds
            )

            def progress(n: int) -> None:
                attempt.done += n

            done = await write_differences(repo, rp, disk, device, progress, await _changed(vc, rp, disk))
        finally:
            await asyncio.shield(asyncio.to_thread(vc.detach_disk, proxy, current.file))
        await asyncio.to_thread(attempt.update, created={})
        log.info(
            "restore %s: disk %d of %s: %d windows unchanged by CBT, %d compared, %d written (%s)",
            attempt.restore_id, disk.key, rp.vm_name, done.skipped, done.windows, done.written,
            _gib(done.bytes),
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


async def _changed(vc: VCenter, rp: RestorePoint, disk: DiskEntry) -> list[tuple[int, int]] | None:
    """Areas of the (powered-off) VM's disk changed since the restore point, by CBT; None when
    CBT cannot say (off, reset since, no change id recorded): then every window is compared."""
    if not disk.change_id or not rp.vm_moref:
        return None
    try:
        return await asyncio.to_thread(
            vc.changed_areas, rp.vm_moref, None, disk.key, disk.capacity, disk.change_id
        )
    except VSphereError as exc:
        log.info(
            "disk %d of %s: CBT cannot say what changed (%s); comparing every window",
            disk.key,
            rp.vm_name,
            exc,
        )
        return None


async def _restore_test(
    attempt: Attempt, vc: VCenter, target: RestoreTarget, rp_id: str, location: str
) -> str:
    """Restore as a temporary VM on an isolated network, power it on, check it runs, remove it,
    and store a signed report (`shared/catalog/reports.py`) of what was restored and what was seen."""
    ctx = attempt.deps.ctx
    started, t0 = ctx.clock(), time.monotonic()
    moref = await _restore(attempt, vc, target, rp_id, location)
    restored_s = time.monotonic() - t0
    await asyncio.to_thread(attempt.update, phase="testing")
    checks: list[dict[str, Any]] = []
    hw = await asyncio.to_thread(vc.vm_hardware, moref)
    checks.append({"check": "powered on", "ok": hw["power_state"] == "poweredOn", "seen": hw["power_state"]})
    nics_ok = bool(hw["nics"]) and all(n == target.network for n in hw["nics"])
    checks.append({"check": f"every NIC on {target.network}", "ok": nics_ok, "seen": hw["nics"]})
    checks.append(await _heartbeat(vc, moref, ctx.settings.pipeline.restore_test_boot))
    tested_s = time.monotonic() - t0 - restored_s
    await asyncio.to_thread(attempt.update, phase="cleaning_up")
    await _clean(vc, _created(attempt))
    await asyncio.to_thread(attempt.update, created={})
    _, rp = await _open_point(attempt, rp_id, location)
    ok = all(c["ok"] is not False for c in checks)
    report = {
        "kind": "vbm restore test",
        "version": 1,
        "restore_id": attempt.restore_id,
        "result": "passed" if ok else "failed",
        "restore_point": {
            "id": rp.id,
            "vm_name": rp.vm_name,
            "vm_moref": rp.vm_moref,
            "vcenter": rp.vcenter,
            "finished": rp.finished.isoformat(),
            "repository": location,
            "disks": [{"key": d.key, "capacity": d.capacity, "tree_blake3": d.tree} for d in rp.disks],
            "files": [{"path": f.path, "size": f.size, "blake3": f.digest} for f in rp.files if f.digest],
        },
        "test_vm": {"name": target.name, "moref": moref, "datastore": target.datastore,
                    "network": target.network, "cpus": hw["cpus"], "memory_mb": hw["memory_mb"],
                    "removed": True},
        "checks": checks,
        "timings_s": {"restore": round(restored_s, 2), "checks": round(tested_s, 2),
                      "total": round(time.monotonic() - t0, 2)},
        "started": started.isoformat(),
        "finished": ctx.clock().isoformat(),
        "vbm": __version__,
    }  # fmt: skip
    signed = await asyncio.to_thread(_sign_and_store, ctx, report, rp.vm_name, rp_id, ok)
    log.info("restore test %s of %s: %s (key %s)", attempt.restore_id, rp.vm_name, report["result"], signed)
    if not ok:
        failed = "; ".join(f"{c['check']}: saw {c['seen']}" for c in checks if c["ok"] is False)
        raise RestoreFailed(f"restore test of {rp.vm_name} failed ({failed}); the test VM was removed")
    return moref


async def _heartbeat(vc: VCenter, moref: str, boot: float) -> dict[str, Any]:
    """The guest heartbeat once VMware Tools run (waiting up to `boot` s); not available without
    Tools (reported as such, not as a failure)."""
    deadline = time.monotonic() + boot
    while True:
        guest = await asyncio.to_thread(vc.guest_status, moref)
        if guest["tools"] in ("toolsNotInstalled", "unknown"):
            return {
                "check": "guest heartbeat",
                "ok": None,
                "seen": "not available: VMware Tools not installed",
            }
        if guest["heartbeat"] == "green":
            return {"check": "guest heartbeat", "ok": True, "seen": f"green, tools {guest['tools_running']}"}
        if time.monotonic() > deadline:
            return {
                "check": "guest heartbeat",
                "ok": False,
                "seen": f"{guest['heartbeat']} after {boot:.0f}s",
            }
        await asyncio.sleep(2.0)


def _sign_and_store(ctx: Any, report: dict[str, Any], vm_name: str, rp_id: str, ok: bool) -> str:
    signed = sign(signing_key(ctx.settings.data_dir), report)
    with ctx.sessions.begin() as s:
        s.merge(
            RestoreReport(
                id=report["restore_id"],
                restore_point_id=rp_id,
                vm_name=vm_name,
                ok=ok,
                created_at=ctx.clock(),
                signed=json.dumps(signed, sort_keys=True),
            )
        )
    return str(signed["key_id"])


async def _instant(attempt: Attempt, vc: VCenter, target: RestoreTarget, rp_id: str, location: str) -> str:
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
    repo, rp = await _open_point(attempt, rp_id, location)
    files = await _vm_files(repo, rp, target.name, target.network)
    datacenter = target.datacenter or await _datacenter_of(vc, rp)
    where = await asyncio.to_thread(
        vc.placement, datacenter, "", target.name,
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
    await asyncio.to_thread(vc.mount_datastore, where, ds_name, str(root), ctx.settings.instant.nfs_server)
    vmx_path = f"[{ds_name}] {name}/{name}.vmx"
    await asyncio.to_thread(attempt.created, "vmx", vmx_path)
    await asyncio.to_thread(attempt.update, phase="registering")

    moref = await _register(attempt, vc, where, vmx_path)
    if target.network:
        await asyncio.to_thread(vc.connect_nics, moref, target.network)
    await asyncio.to_thread(attempt.update, phase="powering_on")
    await asyncio.to_thread(vc.power_on, moref)
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
        vc = deps.vcenters.get(vcenter)
        if event.action == "migrate" and moref and event.datastore:
            await asyncio.to_thread(vc.relocate, moref, event.datastore)
            # the VM's files are on production now: only the published copy and its mount remain,
            # and that is recorded at once, so no later clean-up can touch the migrated VM
            created = {k: v for k, v in created.items() if k not in ("vm", "vmx")}
            await asyncio.to_thread(_set_created, ctx, event.restore_id, created, "migrating")
        await asyncio.to_thread(clean, vc, created)
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


async def _register(attempt: Attempt, vc: VCenter, where: Placement, vmx_path: str) -> str:
    """Register the uploaded .vmx and record the VM.

    vCenter finishes a registration it started even if we stop waiting: a cancel waits for it,
    so the new VM is recorded and then removed, never left behind unrecorded. If this attempt
    was superseded meanwhile (the watchdog or a redelivery took over, and may already have
    cleaned up), the registration is undone here: unregistered, not destroyed, as the files
    now belong to whoever took over.
    """

    async def register() -> str:
        moref = await asyncio.to_thread(vc.register_vm, where, vmx_path)
        try:
            await asyncio.to_thread(attempt.created, "vm", moref)
        except Superseded:
            log.warning(
                "restore %s: superseded while registering %s; unregistering VM %s",
                attempt.restore_id, vmx_path, moref,
            )  # fmt: skip
            await asyncio.to_thread(vc.unregister_vm, moref)
            raise
        return moref

    return await _finish_even_if_cancelled(register())


async def _finish_even_if_cancelled(coro: Coroutine[Any, Any, T]) -> T:
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def _datacenter_of(vc: VCenter, rp: RestorePoint) -> str:
    if rp.vm_moref:
        with contextlib.suppress(NotFound):
            return (await asyncio.to_thread(vc.vm, rp.vm_moref)).datacenter
    names = await asyncio.to_thread(vc.datacenters)
    if len(names) == 1:
        return names[0]
    raise RestoreFailed(
        f"the original VM is gone and there are several datacenters ({', '.join(names)}): give one"
    )


def _descriptor_path(disk: DiskEntry) -> str:
    """'web/web-flat.vmdk' -> 'web/web.vmdk' (the descriptor stored beside the image)."""
    file = disk.file
    return file[: -len("-flat.vmdk")] + ".vmdk" if file.endswith("-flat.vmdk") else file


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


async def _put_small(http: Any, where: Placement, path: str, data: bytes) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield data

    await _with_retries(
        lambda: http.put_file(where.datacenter, where.datastore, path, body(), len(data)), path
    )


async def _upload_disk(
    attempt: Attempt,
    http: Any,
    where: Placement,
    repo: Repository,
    rp: RestorePoint,
    disk: DiskEntry,
    path: str,
) -> None:
    start = attempt.done

    async def body() -> AsyncIterator[bytes]:
        async for piece in read_disk(repo, rp, disk):
            attempt.done += len(piece)
            yield piece

    def again() -> Any:
        attempt.done = start  # a retried upload starts the file over
        return http.put_file(where.datacenter, where.datastore, path, body(), disk.capacity)

    await _with_retries(again, path)


def _thin(descriptor_text: str) -> bool:
    """Whether the backed-up disk was thin (its descriptor says ddb.thinProvisioned = "1")."""
    return any(
        line.replace(" ", "").lower() == 'ddb.thinprovisioned="1"' for line in descriptor_text.splitlines()
    )


async def _import_thin(
    attempt: Attempt,
    vc: VCenter,
    http: Any,
    where: Placement,
    repo: Repository,
    rp: RestorePoint,
    vmx_path: str,
    disks: list[tuple[DiskEntry, str, StreamOptimized]],
) -> None:
    """Write thin disks through NFC: import a placeholder VM that creates them (thin, at their
    final paths), PUT each as a streamOptimized stream holding only the grains with data, complete
    the lease, and unregister the placeholder (the restored .vmx is written over its own)."""
    imp = await asyncio.to_thread(vc.import_disks, where, vmx_path, [(f, d.capacity) for d, f, _ in disks])
    try:
        await asyncio.to_thread(attempt.created, "vm", imp.vm)
        total = sum(d.capacity for d, _, _ in disks)
        keep_alive = asyncio.create_task(_keep_lease(vc, imp.lease, attempt, total))
        try:
            for (disk, file, plan), (url, thumbprint) in zip(disks, imp.urls, strict=True):
                client = http if url.startswith(http.base_url + "/") else _host_client(http, url, thumbprint)
                try:
                    await _upload_stream(attempt, client, url, repo, rp, disk, file, plan)
                finally:
                    if client is not http:
                        await client.close()
                log.info(
                    "restore %s: %s written thin: %d of %d grains sent (%s of %s)",
                    attempt.restore_id, file, len(plan.grains), plan.total_grains,
                    _gib(plan.size), _gib(disk.capacity),
                )  # fmt: skip
        finally:
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)
        await asyncio.to_thread(vc.lease_complete, imp.lease)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await asyncio.shield(
                asyncio.to_thread(vc.lease_abort, imp.lease, f"vbm: {exc or type(exc).__name__}")
            )
        raise
    await asyncio.to_thread(vc.unregister_vm, imp.vm)


async def _keep_lease(vc: VCenter, lease: str, attempt: Attempt, total: int) -> None:
    start = attempt.done
    while True:
        await asyncio.sleep(20)
        percent = min(99, int(100 * (attempt.done - start) / max(1, total)))
        with contextlib.suppress(VSphereError):
            await asyncio.to_thread(vc.lease_progress, lease, percent)


def _host_client(http: Any, url: str, thumbprint: str | None) -> Any:
    """A client for an ESXi host's NFC URL (vCenter hands out the host, and its thumbprint)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return type(http)(
        f"{parts.scheme}://{parts.netloc}", http.cookie_source, thumbprint=thumbprint, verify_tls=False
    )


async def _data_grains(repo: Repository, rp: RestorePoint, disk: DiskEntry) -> list[int]:
    """Every grain of `disk` that holds data, in order. The stream's length must be known before
    it starts, so each distinct chunk is read once first (a few at a time) to find the zero grains
    inside windows that hold data: a thin disk comes back as thin as it was, not 4 MiB a window."""
    if disk.chunk_size % GRAIN:  # windows not aligned to grains: send every grain of a window
        return grains_with_data(disk.capacity, disk.windows())
    ids = iter(sorted(disk.chunk_ids()))
    masks: dict[str, int] = {}

    async def worker() -> None:
        for cid in ids:
            plain = await repo.get_chunk(cid, rp.id)
            masks[cid] = await asyncio.to_thread(grain_mask, plain)

    await asyncio.gather(*(worker() for _ in range(4)))
    per_window = disk.chunk_size // GRAIN
    grains: list[int] = []
    for offset, _length, cid in disk.windows():
        if cid is not None:
            base = offset // GRAIN
            for first, end in mask_runs(masks[cid]):
                grains.extend(range(base + first, base + min(end, per_window)))
    return grains


async def _upload_stream(
    attempt: Attempt,
    client: Any,
    url: str,
    repo: Repository,
    rp: RestorePoint,
    disk: DiskEntry,
    file: str,
    plan: StreamOptimized,
) -> None:
    start = attempt.done

    async def grains() -> AsyncIterator[tuple[int, bytes | memoryview]]:
        """(grain index, its bytes) for every grain of the plan, cut from the disk's windows."""
        if disk.chunk_size % GRAIN == 0:
            async for item in _window_grains(repo, rp, disk, set(plan.grains), attempt, start):
                yield item
            return
        for first, end in grain_runs(plan.grains):
            offset = first * GRAIN
            index, pending = first, bytearray()
            async for piece in read_disk(repo, rp, disk, offset, min(end * GRAIN, disk.capacity) - offset):
                view = memoryview(piece)
                if pending:
                    take = GRAIN - len(pending)
                    pending += view[:take]
                    view = view[take:]
                    if len(pending) < GRAIN:
                        continue
                    yield index, bytes(pending)
                    pending = bytearray()
                    index += 1
                whole = len(view) // GRAIN
                if whole:
                    yield index, view[: whole * GRAIN]
                    view = view[whole * GRAIN :]
                    index += whole
                pending += view
                attempt.done = start + min(disk.capacity, index * GRAIN)  # zeros skipped count as done
            if pending:
                yield index, bytes(pending)

    def again() -> Any:
        attempt.done = start
        return client.put_url(url, file, plan.stream(grains()), plan.size)

    await _with_retries(again, file)
    attempt.done = start + disk.capacity


async def _window_grains(
    repo: Repository, rp: RestorePoint, disk: DiskEntry, wanted: set[int], attempt: Attempt, start: int
) -> AsyncIterator[tuple[int, bytes | memoryview]]:
    """The wanted grains window by window: each run of windows holding data is read once
    (`read_disk` yields one piece per window), and its wanted grains cut from it in runs."""
    per_window = disk.chunk_size // GRAIN
    runs: list[tuple[int, int]] = []  # [first window, end window) of consecutive windows with data
    for index, (_offset, _length, cid) in enumerate(disk.windows()):
        if cid is None:
            continue
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    for first, end in runs:
        offset = first * disk.chunk_size
        window = first
        async for piece in read_disk(repo, rp, disk, offset, end * disk.chunk_size - offset):
            view, base = memoryview(piece), window * per_window
            k = 0
            while k < per_window and k * GRAIN < len(view):
                if base + k not in wanted:
                    k += 1
                    continue
                j = k
                while j < per_window and j * GRAIN < len(view) and base + j in wanted:
                    j += 1
                yield base + k, view[k * GRAIN : j * GRAIN]
                k = j
            window += 1
            attempt.done = start + min(disk.capacity, window * disk.chunk_size)  # zeros count as done


async def _with_retries(make: Any, path: str) -> None:
    for n in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            await make()
            return
        except DownloadError as exc:
            if not exc.retryable or n == UPLOAD_ATTEMPTS:
                raise RestoreFailed(f"uploading {path} failed: {exc}") from None
            log.warning(
                "uploading %s (attempt %d of %d) failed, starting it over: %s", path, n, UPLOAD_ATTEMPTS, exc
            )
            await asyncio.sleep(min(10.0, 0.5 * 2**n))
