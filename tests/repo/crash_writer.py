"""A writer to kill: `python -m tests.repo.crash_writer REPO PROCESS_NUMBER`.

Writes restore points in a loop into a LocalBackend repository and prints `committed <id>` after
each commit. Every image is deterministic: a restore point names how it was made in `run_id`
(`<process>-<n>`) and, for an incremental, in `parent`, so `image_of` rebuilds the exact bytes
from the manifests alone. Images draw their windows from a small pool, so later writers find the
chunks (and the leftovers) of the writers killed before them.
"""

from __future__ import annotations

import asyncio
import random
import sys
from datetime import UTC, datetime

from shared.repo import LocalBackend, Repository, RestorePoint, Writer, restore_point

CHUNK = 16 * 1024
POOL = 96  # distinct non-zero windows that images are made of
NOW = datetime(2026, 11, 26, tzinfo=UTC)


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, offset: int, length: int) -> bytes:
        await asyncio.sleep(0)
        return self.data[offset : offset + length]


def pool_window(i: int) -> bytes:
    rng = random.Random(f"pool-{i}")
    if i % 3 == 0:  # compressible
        return (bytes([i]) * 100 + rng.randbytes(28)) * (CHUNK // 128)
    return rng.randbytes(CHUNK)


def base_image(run_id: str) -> bytes:
    rng = random.Random(f"base-{run_id}")
    windows = rng.randrange(40, 160)
    out = bytearray()
    for _ in range(windows):
        kind = rng.random()
        if kind < 0.25:
            out += bytes(CHUNK)
        elif kind < 0.75:
            out += pool_window(rng.randrange(POOL))
        else:
            out += rng.randbytes(CHUNK)  # new: a chunk nobody wrote before
    return bytes(out) + rng.randbytes(rng.randrange(0, CHUNK))


def changes(run_id: str, size: int) -> list[tuple[int, bytes]]:
    rng = random.Random(f"changes-{run_id}")
    out = []
    for _ in range(rng.randrange(1, 12)):
        n = rng.randrange(1, 3 * CHUNK)
        off = rng.randrange(0, max(1, size - n))
        out.append((off, rng.randbytes(n)[: size - off]))
    return out


def apply(image: bytes, run_id: str) -> tuple[bytes, list[tuple[int, int]]]:
    out = bytearray(image)
    ranges = []
    for off, data in changes(run_id, len(image)):
        out[off : off + len(data)] = data
        ranges.append((off, len(data)))
    return bytes(out), ranges


async def image_of(repo: Repository, rp: RestorePoint) -> bytes:
    """The image a restore point was made from, rebuilt from its description."""
    assert rp.run_id is not None
    if rp.parent is None:
        return base_image(rp.run_id)
    parent = await repo.load(rp.parent)
    return apply(await image_of(repo, parent), rp.run_id)[0]


async def main(location: str, process: int) -> None:
    repo = await Repository.open(LocalBackend(location))
    writer = Writer(repo, workers=4)
    rng = random.Random(f"process-{process}")
    last: tuple[RestorePoint, bytes] | None = None
    try:
        for n in range(1000):
            run_id = f"{process}-{n}"
            if last is not None and rng.random() < 0.5:
                parent, parent_image = last
                image, ranges = apply(parent_image, run_id)
                disk, _ = await writer.write_disk(
                    BytesSource(image),
                    key=2000,
                    capacity=len(image),
                    file="crash/crash-flat.vmdk",
                    parent=parent.disks[0],
                    parent_id=parent.id,
                    changed=ranges,
                )
                rp = restore_point(
                    vm_name="crash", started=NOW, finished=NOW, disks=[disk], parent=parent.id, run_id=run_id
                )
            else:
                image = base_image(run_id)
                disk, _ = await writer.write_disk(
                    BytesSource(image), key=2000, capacity=len(image), file="crash/crash-flat.vmdk"
                )
                rp = restore_point(vm_name="crash", started=NOW, finished=NOW, disks=[disk], run_id=run_id)
            await repo.commit(rp)
            print(f"committed {rp.id} {run_id}", flush=True)
            last = (rp, image)
    finally:
        writer.close()


if __name__ == "__main__":
    print("ready", flush=True)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
