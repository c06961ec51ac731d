"""`python -m bench.sha256 [--size 2G] [--reps 3]`: what the SHA-256 of a full costs the writer.

The benchmark's image (bench/image.py: random, zero and text-like segments) as a local file is
backed up by `Writer.write_disk` into a new local repository each time (so every chunk is
compressed and written), alternately without and with `OrderedSha256` (shared/repo/digests.py),
reading through `read_into` as the mover does. Reported: wall time, throughput and CPU seconds
of each, and a bare `hashlib.sha256` over the file on one thread (what SHA-256 costs by itself).
The SHA-256 the writer computed is checked against the image's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.image import write_image
from bench.run import GiB, MiB, parse_size
from shared.repo import LocalBackend, Repository, Writer, restore_point
from shared.repo.digests import OrderedSha256


class FileDisk:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    async def read(self, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(os.pread, self.fd, length, offset)

    async def read_into(self, offset: int, buf: memoryview) -> None:
        await asyncio.to_thread(os.preadv, self.fd, [buf], offset)


async def backup(image: Path, repo_dir: Path, size: int, with_sha: bool) -> tuple[float, float, str | None]:
    shutil.rmtree(repo_dir, ignore_errors=True)
    repo = await Repository.init(LocalBackend(repo_dir))
    writer = Writer(repo)
    disk_src = FileDisk(image)
    sha = OrderedSha256(size, repo.chunk_size) if with_sha else None
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        disk, _ = await writer.write_disk(
            disk_src, key=2000, capacity=size, file="bench-flat.vmdk", sha256=sha
        )
        now = datetime.now(UTC)
        await repo.commit(restore_point(vm_name="bench", started=now, finished=now, disks=[disk]))
    finally:
        writer.close()
        os.close(disk_src.fd)
        await repo.backend.close()
    return time.perf_counter() - t0, time.process_time() - c0, sha.hexdigest() if sha else None


def bare_sha256(image: Path) -> tuple[float, str]:
    h = hashlib.sha256()
    buf = bytearray(4 * MiB)
    t0 = time.perf_counter()
    with open(image, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(memoryview(buf)[:n])
    return time.perf_counter() - t0, h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sha256")
    parser.add_argument("--size", type=parse_size, default=2 * GiB)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the image and repositories go")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vbm-sha-bench-", dir=args.dir))
    try:
        image = tmp / "image"
        expected, _ = write_image(image, args.size, seed=42)
        bare, digest = bare_sha256(image)
        assert digest == expected
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.reps):
            for with_sha in (False, True):
                wall, cpu, got = asyncio.run(backup(image, tmp / "repo", args.size, with_sha))
                if with_sha and got != expected:
                    raise SystemExit(f"SHA-256 {got} differs from the image's {expected}")
                results[with_sha].append((wall, cpu))
        gib = args.size / GiB
        speed = args.size / MiB / bare
        print(f"image {gib:.2f} GiB, {os.cpu_count()} CPUs; bare hashlib.sha256: {speed:.0f} MiB/s")
        for with_sha, label in ((False, "without SHA-256"), (True, "with SHA-256   ")):
            walls = [w for w, _ in results[with_sha]]
            cpus = [c for _, c in results[with_sha]]
            med = statistics.median(walls)
            print(
                f"{label}: {args.size / MiB / med:.0f} MiB/s (median wall {med:.2f} s of {walls}),"
                f" CPU {statistics.median(cpus) / gib:.2f} s/GiB"
            )
        slower = statistics.median(w for w, _ in results[True]) / statistics.median(
            w for w, _ in results[False]
        )
        print(f"with / without: {slower:.3f} (wall); SHA-256 checked equal to the image's")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
