"""Uploads of a restored VM's files: small files and thick disks by HTTP PUT to the datastore, thin
disks as streamOptimized streams through an NFC import lease; a cut upload starts over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from services.mover.restore.common import VC, VCENTER_ERRORS, Attempt, RestoreFailed, gib
from shared.observe import tracing
from shared.repo import Repository, read_disk
from shared.repo.manifest import DiskEntry, RestorePoint
from shared.vsphere import Placement, VCenter
from shared.vsphere.datastore import DownloadError
from shared.vsphere.vmdk import GRAIN, StreamOptimized, grain_mask, grain_runs, grains_with_data, mask_runs

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3


async def put_small(http: Any, where: Placement, path: str, data: bytes) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield data

    await _with_retries(
        lambda: http.put_file(where.datacenter, where.datastore, path, body(), len(data)), path
    )


async def upload_disk(
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

    with tracing.span("disk restore", disk=disk.key, capacity_bytes=disk.capacity, path=path):
        await _with_retries(again, path)


async def import_thin(
    attempt: Attempt,
    vc: VC,
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
    imp = await vc.call(VCenter.import_disks, where, vmx_path, [(f, d.capacity) for d, f, _ in disks])
    try:
        await asyncio.to_thread(attempt.created, "vm", imp.vm)
        total = sum(d.capacity for d, _, _ in disks)
        keep_alive = asyncio.create_task(_keep_lease(vc, imp.lease, attempt, total))
        try:
            for (disk, file, plan), (url, thumbprint) in zip(disks, imp.urls, strict=True):
                client = http if url.startswith(http.base_url + "/") else _host_client(http, url, thumbprint)
                try:
                    with tracing.span("disk restore", disk=disk.key, capacity_bytes=disk.capacity, path=file):
                        await _upload_stream(attempt, client, url, repo, rp, disk, file, plan)
                finally:
                    if client is not http:
                        await client.close()
                log.info(
                    "restore %s: %s written thin: %d of %d grains sent (%s of %s)",
                    attempt.restore_id, file, len(plan.grains), plan.total_grains,
                    gib(plan.size), gib(disk.capacity),
                )  # fmt: skip
        finally:
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)
        await vc.call(VCenter.lease_complete, imp.lease)
    except BaseException as exc:
        why = f"vbm: {exc or type(exc).__name__}"
        with contextlib.suppress(Exception):
            await asyncio.shield(vc.call(VCenter.lease_abort, imp.lease, why))
        raise
    await vc.call(VCenter.unregister_vm, imp.vm)


async def _keep_lease(vc: VC, lease: str, attempt: Attempt, total: int) -> None:
    start = attempt.done
    while True:
        await asyncio.sleep(20)
        percent = min(99, int(100 * (attempt.done - start) / max(1, total)))
        with contextlib.suppress(*VCENTER_ERRORS):
            await vc.call(VCenter.lease_progress, lease, percent)


def _host_client(http: Any, url: str, thumbprint: str | None) -> Any:
    """A client for an ESXi host's NFC URL (vCenter hands out the host, and its thumbprint)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return type(http)(
        f"{parts.scheme}://{parts.netloc}", http.cookie_source, thumbprint=thumbprint, verify_tls=False
    )


async def data_grains(repo: Repository, rp: RestorePoint, disk: DiskEntry) -> list[int]:
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
