"""One measured step of the benchmark, run as its own process: `python -m bench.step '<json>'`.

Kinds:

- `raw`: download the disk as fast as the mover could at best: the same client (`DatastoreHTTP`),
  the pyVmomi session cookie, 4 MiB Range reads by the same number of concurrent workers into
  reused buffers; the bytes are thrown away.
- `backup`: what services/mover/handlers.py does for one disk of a snapshot, without NATS and the
  database: the vCenter session cookie, CBT's answer ('*' for a full, changes since the parent's
  change id for an incremental, nothing without CBT), `Writer.write_disk` reading through
  `DatastoreHTTP`, the small files (vmx, nvram, descriptor), and the commit of the restore point.
- `raw_put`: upload as fast as a restore could at best: one `DatastoreHTTP.put_file` of the
  disk's size from a 4 MiB buffer in memory (no repository).
- `restore`: `read_disk` of a restore point, streamed to the datastore with HTTP PUT /folder
  through `DatastoreHTTP.put_file` (or to a local file).
- `profile`: a full backup in this process under cProfile, with a breakdown of where the time
  goes (per stage: wall seconds summed over workers and thread CPU seconds).

The last line of stdout is a JSON object: the step's own figures (bytes, the wall and CPU time of
the work itself, without the interpreter's start) and, for `profile`, the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import posixpath
import pstats
import random
import resource
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import SecretStr

from shared.repo import (
    FileEntry,
    LocalBackend,
    NotARepository,
    Repository,
    Writer,
    WriteStats,
    read_disk,
    restore_point,
)
from shared.repo import chunk as chunk_mod
from shared.settings import VCenterSettings
from shared.vsphere import VCenter
from shared.vsphere.datastore import DatastoreDisk, DatastoreHTTP

T = TypeVar("T")
WINDOW = 4 * 1024 * 1024


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _vcenter(spec: dict[str, Any]) -> VCenter:
    settings = VCenterSettings(
        name="lab",
        url=spec["sdk_url"],
        username=spec["username"],
        password=SecretStr(spec["password"]),
        verify_tls=False,
    )
    return VCenter(settings)


def _flat_of(datastore_path: str) -> tuple[str, str]:
    """'[ds1] web/web.vmdk' -> ('ds1', 'web/web-flat.vmdk'), as the mover does."""
    ds, _, path = datastore_path.partition("] ")
    path = path[: -len(".vmdk")] + "-flat.vmdk" if path.endswith(".vmdk") else path
    return ds.lstrip("["), path


def _split(datastore_path: str) -> tuple[str, str]:
    ds, _, path = datastore_path.partition("] ")
    return ds.lstrip("["), path


def _small_files(vmx_path: str, descriptor: str) -> list[str]:
    ds, vmx = _split(vmx_path)
    folder = posixpath.dirname(vmx)
    nvram = posixpath.join(folder, posixpath.basename(vmx)[:-4] + ".nvram")
    return [vmx_path, f"[{ds}] {nvram}", descriptor]


async def raw(spec: dict[str, Any]) -> dict[str, Any]:
    """Ranged GETs of the whole flat disk, `workers` at a time, the bytes thrown away.

    The same client as the mover (`DatastoreHTTP.read_range_into`: pool threads, keep-alive
    connections, each range received straight into one reused buffer per worker) and nothing
    else: the fastest this process can take the disk off the endpoint.
    """
    vc = _vcenter(spec)
    try:
        cookie = await asyncio.to_thread(vc.session_cookie)
        ds, flat = _flat_of(spec["disk"]["datastore_path"])
        capacity = int(spec["disk"]["capacity"])
        workers = int(spec.get("workers", 4))
        client = DatastoreHTTP(vc.base_url, _const(cookie), verify_tls=False, connections=workers)
        disk = client.disk(spec["datacenter"], ds, flat, capacity)
        offsets = iter(range(0, capacity, WINDOW))
        got = 0

        async def work() -> None:
            nonlocal got
            buf = memoryview(bytearray(WINDOW))
            for off in offsets:
                piece = buf[: min(WINDOW, capacity - off)]
                await disk.read_into(off, piece)
                got += len(piece)

        try:
            await asyncio.gather(*(work() for _ in range(workers)))
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(vc.close)
    if got != capacity:
        raise RuntimeError(f"raw download read {got} of {capacity} bytes")
    return {"bytes_read": got}


async def raw_put(spec: dict[str, Any]) -> dict[str, Any]:
    """One PUT of `size` bytes to the datastore through `DatastoreHTTP.put_file`, from memory.

    The same 4 MiB of random bytes over and over: no repository, no decompression, no hashing:
    the fastest a restore could write a disk of that size to this datastore.
    """
    size = int(spec["size"])
    block = random.Random(7).randbytes(WINDOW)

    async def body() -> AsyncIterator[bytes]:
        for off in range(0, size, WINDOW):
            yield block[: min(WINDOW, size - off)]

    vc = _vcenter(spec)
    try:
        cookie = await asyncio.to_thread(vc.session_cookie)
        client = DatastoreHTTP(vc.base_url, _const(cookie), verify_tls=False)
        try:
            await client.put_file(spec["datacenter"], spec["datastore"], spec["target_path"], body(), size)
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(vc.close)
    return {"bytes_written": size}


def _const(value: str) -> Callable[[], Awaitable[str]]:
    async def get() -> str:
        return value

    return get


async def backup(spec: dict[str, Any]) -> dict[str, Any]:
    """One disk's backup as the mover makes it (full, CBT incremental, or without CBT)."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    vc = _vcenter(spec)
    disk = spec["disk"]
    key, capacity, change_id = int(disk["key"]), int(disk["capacity"]), disk["change_id"]
    use_cbt = bool(spec["use_cbt"])

    async def cookie() -> str:
        return await asyncio.to_thread(vc.session_cookie)

    http = DatastoreHTTP(vc.base_url, cookie, verify_tls=False)
    backend = LocalBackend(spec["repo"])
    writer: Writer | None = None
    try:
        try:
            repo = await Repository.open(backend)
        except NotARepository:
            repo = await Repository.init(backend)
        writer = Writer(repo)
        parent = await repo.load(spec["parent"]) if spec.get("parent") else None
        parent_disk = next((d for d in parent.disks if d.key == key), None) if parent else None
        await asyncio.to_thread(vc.connect)
        marks["open"] = time.perf_counter() - t0
        changed = allocated = None
        if use_cbt and change_id:
            since = parent_disk.change_id if parent_disk is not None else None
            if since and parent_disk is not None and parent_disk.capacity == capacity:
                changed = await asyncio.to_thread(
                    vc.changed_areas, spec["vm_moref"], spec["snapshot_moref"], key, capacity, since
                )
            if changed is None:
                allocated = await asyncio.to_thread(
                    vc.changed_areas, spec["vm_moref"], spec["snapshot_moref"], key, capacity, "*"
                )
        if changed is None:
            parent_disk = None
        marks["cbt"] = time.perf_counter() - t0
        started = datetime.now(UTC)
        ds, flat = _flat_of(disk["datastore_path"])
        entry, stats = await writer.write_disk(
            http.disk(spec["datacenter"], ds, flat, capacity),
            key=key,
            capacity=capacity,
            file=flat,
            change_id=change_id,
            parent=parent_disk,
            parent_id=parent.id if parent and parent_disk else None,
            changed=changed,
            allocated=allocated,
        )
        marks["disk"] = time.perf_counter() - t0
        files = [FileEntry(path=flat, size=capacity, disk_key=key)]
        for path in _small_files(spec["vmx_path"], disk["datastore_path"]):
            fds, rel = _split(path)
            data = await http.get_file(spec["datacenter"], fds, rel)
            if data is None:
                continue
            entry_f, st = await writer.write_file(rel, data)
            stats.add(st)
            files.append(entry_f)
        marks["small_files"] = time.perf_counter() - t0
        rp = restore_point(
            vm_name=spec["vm_name"],
            started=started,
            finished=datetime.now(UTC),
            disks=[entry],
            files=files,
            parent=parent.id if parent and entry.built_on else None,
            job_id=None,
            run_id="bench",
            vcenter="lab",
            vm_moref=spec["vm_moref"],
            snapshot_name=spec["snapshot_name"],
            snapshot_moref=spec["snapshot_moref"],
        )
        await repo.commit(rp)
        marks["commit"] = time.perf_counter() - t0
    finally:
        await http.close()
        if writer is not None:
            writer.close()
        await asyncio.to_thread(vc.close)
    return {
        "rp": rp.id,
        "kind": "incremental" if rp.parent else "full",
        "changed_areas": len(changed) if changed is not None else None,
        "marks": marks,
        **_stats(stats),
    }


def _stats(stats: WriteStats) -> dict[str, int]:
    return {name: getattr(stats, name) for name in stats.__dataclass_fields__}


async def restore(spec: dict[str, Any]) -> dict[str, Any]:
    """read_disk of a restore point, streamed with HTTP PUT to the datastore (or to a file)."""
    repo = await Repository.open(LocalBackend(spec["repo"]))
    rp = await repo.load(spec["rp"])
    disk = next(d for d in rp.disks if d.key == int(spec["key"]))
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        async for piece in read_disk(repo, rp, disk):
            sent += len(piece)
            yield piece

    if spec.get("target_file"):
        fh = await asyncio.to_thread(open, spec["target_file"], "wb")
        try:
            async for piece in body():
                await asyncio.to_thread(fh.write, piece)
        finally:
            await asyncio.to_thread(fh.close)
        return {"bytes_written": sent, "to": "file"}
    vc = _vcenter(spec)
    try:
        cookie = await asyncio.to_thread(vc.session_cookie)
        client = DatastoreHTTP(vc.base_url, _const(cookie), verify_tls=False)
        try:
            await client.put_file(
                spec["datacenter"], spec["datastore"], spec["target_path"], body(), disk.capacity
            )
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(vc.close)
    return {"bytes_written": sent, "to": "datastore"}


class _Breakdown:
    """Wall and thread-CPU seconds per stage, summed over every call (any thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, name: str, wall: float, cpu: float) -> None:
        with self.lock:
            self.wall[name] += wall
            self.cpu[name] += cpu
            self.calls[name] += 1

    def sync(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def wrapped(*args: Any, **kwargs: Any) -> T:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - w, time.thread_time() - c)

        return wrapped

    def coro(self, name: str, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def wrapped(*args: Any, **kwargs: Any) -> T:
            w = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - w, 0.0)

        return wrapped


@contextlib.contextmanager
def _instrumented(bd: _Breakdown) -> Iterator[None]:
    """Wrap the stages of Writer.write_disk (test-style monkeypatching, this process only)."""
    stages: list[tuple[Any, str, str, bool]] = [
        (chunk_mod, "id_or_zero", "BLAKE3 + zero test (pool thread)", False),
        (chunk_mod, "encode", "zstd encode + CRC (pool thread)", False),
        (LocalBackend, "_put", "write chunk file (to_thread)", False),
        (LocalBackend, "_exists", "has_chunk stat (to_thread)", False),
        (DatastoreHTTP, "_exchange", "HTTP exchange (client pool thread)", False),
        (DatastoreDisk, "read_into", "HTTP range read (await, per worker)", True),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _label, _is_coro in stages]
    for owner, name, label, is_coro in stages:
        original = getattr(owner, name)
        setattr(owner, name, bd.coro(label, original) if is_coro else bd.sync(label, original))
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


async def profile(spec: dict[str, Any]) -> dict[str, Any]:
    bd = _Breakdown()
    prof = cProfile.Profile()
    with _instrumented(bd):
        wall, cpu = time.perf_counter(), _cpu()
        prof.enable()
        result = await backup(spec)
        prof.disable()
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    return {
        **result,
        "profile_wall": wall,
        "profile_cpu": cpu,
        "stages": {n: {"wall": bd.wall[n], "cpu": bd.cpu[n], "calls": bd.calls[n]} for n in bd.wall},
        "cprofile_main_thread": lines,
    }


KINDS: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]] = {
    "raw": raw,
    "raw_put": raw_put,
    "backup": backup,
    "restore": restore,
    "profile": profile,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    wall, cpu = time.perf_counter(), _cpu()
    result = asyncio.run(KINDS[spec["kind"]](spec))
    result["work_wall"] = time.perf_counter() - wall
    result["work_cpu"] = _cpu() - cpu
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
