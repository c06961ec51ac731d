"""What the restore modes share: an attempt (its fenced writes to the `restores` row), the vCenter
through the pool, the restore point opened, the VM's files named for the copy, registering it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from services.mover.deps import Deps
from shared.catalog import locations
from shared.catalog.restores import FINAL
from shared.db.models import Restore
from shared.pipeline.restores import clean
from shared.repo import RepoError, Repository, read_file
from shared.repo.locations import opened
from shared.repo.manifest import DiskEntry, RestorePoint
from shared.runtime.bus import Permanent, Retryable
from shared.settings import VCenterSettings
from shared.vsphere import NotFound, Placement, VCenter
from shared.vsphere.pool import VCenters
from shared.vsphere.vmx import descriptor, disk_files, restore_descriptor, restore_vmx

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")
VCENTER_ERRORS = (Retryable, Permanent)  # what `VCenters.call` makes of a vSphere error (its cause)


class RestoreFailed(Exception):
    """The restore cannot go on; the message says why and what to do."""


class Superseded(Exception):
    """A newer attempt (or the watchdog) owns this restore now."""


@dataclass
class VC:
    """One vCenter of the service's pool: blocking calls run through `VCenters.call` (the pool's
    own threads; a vSphere error becomes Retryable or Permanent, the vSphere error its cause)."""

    vcenters: VCenters
    name: str

    def __post_init__(self) -> None:
        self.vcenters.get(self.name)  # Permanent when the vCenter is not configured

    @property
    def settings(self) -> VCenterSettings:
        return self.vcenters.get(self.name).settings

    async def call(self, fn: Callable[Concatenate[VCenter, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(vcenter, *args, **kwargs)` (e.g. `VCenter.power_on, moref`) on the pool's threads."""
        return await self.vcenters.call(self.name, lambda vc: fn(vc, *args, **kwargs))


def not_found(exc: BaseException) -> bool:
    """Whether a failed vCenter call said the object does not exist."""
    return isinstance(exc, Permanent) and isinstance(exc.__cause__, NotFound)


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


def created_of(attempt: Attempt) -> dict[str, str]:
    with attempt.deps.ctx.sessions() as s:
        row = s.get(Restore, attempt.restore_id)
        return dict(row.created) if row is not None else {}


async def clean_up(vc: VC, created: dict[str, str]) -> None:
    """Remove a half-made restore: the VM (with its files) if registered, then the folder."""
    removed = await vc.call(clean, created)
    if removed:
        log.info("restore clean-up removed %s", ", ".join(removed))


async def open_point(attempt: Attempt, rp_id: str, location: str) -> tuple[Repository, RestorePoint]:
    """The restore point, its repository open until the attempt ends."""
    try:
        ctx = attempt.deps.ctx
        credentials = locations.lookup(ctx.settings, ctx.sessions)(location)
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


async def vm_files(repo: Repository, rp: RestorePoint, name: str, network: str | None) -> VMFiles:
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


async def register(attempt: Attempt, vc: VC, where: Placement, vmx_path: str) -> str:
    """Register the uploaded .vmx and record the VM.

    vCenter finishes a registration it started even if we stop waiting: a cancel waits for it,
    so the new VM is recorded and then removed, never left behind unrecorded. If this attempt
    was superseded meanwhile (the watchdog or a redelivery took over, and may already have
    cleaned up), the registration is undone here: unregistered, not destroyed, as the files
    now belong to whoever took over.
    """

    async def register() -> str:
        moref = await vc.call(VCenter.register_vm, where, vmx_path)
        try:
            await asyncio.to_thread(attempt.created, "vm", moref)
        except Superseded:
            log.warning(
                "restore %s: superseded while registering %s; unregistering VM %s",
                attempt.restore_id, vmx_path, moref,
            )  # fmt: skip
            await vc.call(VCenter.unregister_vm, moref)
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


async def datacenter_of(vc: VC, rp: RestorePoint) -> str:
    """The original VM's datacenter when restoring to its own vCenter (morefs repeat across
    vCenters: on another one the moref names some other VM), else the only datacenter."""
    if rp.vm_moref and rp.vcenter in (None, vc.name):
        try:
            return (await vc.call(VCenter.vm, rp.vm_moref)).datacenter
        except Permanent as exc:
            if not not_found(exc):
                raise
    names = await vc.call(VCenter.datacenters)
    if len(names) == 1:
        return names[0]
    raise RestoreFailed(
        f"the original VM is gone and there are several datacenters ({', '.join(names)}): give one"
    )


def _descriptor_path(disk: DiskEntry) -> str:
    """'web/web-flat.vmdk' -> 'web/web.vmdk' (the descriptor stored beside the image)."""
    file = disk.file
    return file[: -len("-flat.vmdk")] + ".vmdk" if file.endswith("-flat.vmdk") else file


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"
