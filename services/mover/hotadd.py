"""Fast in-place restore through hot-add: write only the windows that differ.

The target VM is powered off; each of its disks is attached to the proxy VM (the VM vbm runs in,
`vcenters[].hotadd_proxy`), where the guest sees it as a SCSI disk linked by udev at
`<hotadd.device_dir>/wwn-0x<disk UUID>`. Every window of the disk is read from there and
hashed (BLAKE3, as chunk ids are), except windows that CBT says are unchanged since the
restore point (`QueryChangedDiskAreas` without a snapshot, which vSphere answers for a
powered-off VM, from the restore point's change id; any error there means every window is
read); a window whose hash differs from the restore point's id is
written back from the repository (zeros for a zero window). The disk is flushed and detached.
Reads run at the speed of the proxy's own storage path; only the differing windows are written.
What is attached is recorded first (`created`: `hotadd_proxy`, `hotadd_disk`) so that a failure,
a crash or the watchdog detaches it (`shared/pipeline/restores.py`).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.repo import Repository
from shared.repo.chunk import chunk_id, zero_id
from shared.repo.manifest import DiskEntry, RestorePoint


class HotAddError(Exception):
    """The disk could not be found or written through hot-add; the message says what to do."""


@dataclass
class Written:
    windows: int = 0  # compared (read and hashed)
    written: int = 0
    bytes: int = 0
    skipped: int = 0  # not read: CBT says unchanged since the restore point


def device_path(device_dir: Path, uuid: str | None) -> Path:
    """udev's link for a disk with this vSphere UUID ("6000C29b-..." -> wwn-0x6000c29b...)."""
    digits = "".join(c for c in (uuid or "").lower() if c in "0123456789abcdef")
    if len(digits) != 32:
        raise HotAddError(
            f"the disk has no usable UUID ({uuid!r}): vSphere reports one for every VMFS/NFS disk"
        )
    return device_dir / f"wwn-0x{digits}"


async def wait_device(path: Path, settle: float) -> Path:
    deadline = time.monotonic() + settle
    while not await asyncio.to_thread(path.exists):
        if time.monotonic() > deadline:
            raise HotAddError(
                f"the attached disk did not appear as {path} within {settle:.0f} s: the proxy VM needs"
                " disk.EnableUUID = TRUE (and udev) for its disks to be found by UUID"
            )
        await asyncio.sleep(0.1)
    return path


async def write_differences(
    repo: Repository,
    rp: RestorePoint,
    disk: DiskEntry,
    device: Path,
    progress: Any,
    changed: list[tuple[int, int]] | None = None,
) -> Written:
    """Make the device hold the restore point's disk, writing only windows that differ.

    `changed`: the areas CBT reports changed since the restore point (None: unknown): windows
    outside them are equal to the restore point and are not even read. `progress(n)` is called
    with the bytes of each window done (compared or skipped, and written if needed).
    """
    fd = await asyncio.to_thread(os.open, device, os.O_RDWR)
    done = Written()
    try:
        size = await asyncio.to_thread(os.lseek, fd, 0, os.SEEK_END)
        if size < disk.capacity:
            raise HotAddError(f"{device} holds {size} bytes, the disk {disk.capacity}: not the disk expected")
        for offset, length, cid in disk.windows():
            if changed is not None and not any(a < offset + length and offset < a + n for a, n in changed):
                done.skipped += 1
                progress(length)
                continue
            same = await asyncio.to_thread(_same, fd, offset, length, cid or zero_id(length))
            done.windows += 1
            if not same:
                data = await repo.get_chunk(cid, rp.id) if cid is not None else bytes(length)
                await asyncio.to_thread(_write_all, fd, data, offset)
                done.written += 1
                done.bytes += length
            progress(length)
        await asyncio.to_thread(os.fsync, fd)
    finally:
        await asyncio.to_thread(os.close, fd)
    return done


def _same(fd: int, offset: int, length: int, want: str) -> bool:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise HotAddError(f"reading {length} bytes at {offset} gave {len(data)}")
    return chunk_id(data) == want


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
