"""kill -9 during writes: whatever is visible afterwards is complete and correct.

`tests/repo/crash_writer.py` writes restore points in a loop (full and incremental) from
deterministic images; this test kills it with SIGKILL at seeded random moments (while it starts,
right after a commit, in the middle of a write), starts another, and at the end checks every
visible restore point against the image it was made from, the data check, the listing (no
temporary files), and that writing on top of the leftovers works.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.repo import LocalBackend, Repository, Writer, check, restore_point
from shared.repo.chunk import chunk_id
from tests.repo import crash_writer
from tests.repo.conftest import BytesSource, read_all

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261126
KILLS = 20


class Victim:
    """A crash_writer process whose stdout lines are collected by a thread."""

    def __init__(self, location: Path, number: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.repo.crash_writer", str(location), str(number)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()

    def wait_lines(self, count: int, timeout: float = 30) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.lines) >= count or self.proc.poll() is not None, timeout)
        assert ok and len(self.lines) >= count, f"writer stalled: {self.lines[-3:]} {self.stderr()}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL, f"writer died by itself: {self.stderr()}"
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return ""
        return self.proc.stderr.read()

    def committed(self) -> list[str]:
        return [line.split()[1] for line in self.lines if line.startswith("committed ")]


@pytest.fixture
def victims() -> Iterator[list[Victim]]:
    started: list[Victim] = []
    yield started
    for v in started:  # a failed assertion must not leave a writer running
        if v.proc.poll() is None:
            v.proc.send_signal(signal.SIGKILL)
            v.proc.wait(timeout=30)
        for stream in (v.proc.stdout, v.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.mark.slow
async def test_kill_9_at_random_points(tmp_path: Path, victims: list[Victim]) -> None:
    location = tmp_path / "repo"
    repo = await Repository.init(LocalBackend(location), chunk_size=crash_writer.CHUNK)
    rng = random.Random(SEED)
    promised: list[str] = []  # restore points whose commit returned (printed): must survive
    modes: dict[str, int] = {}
    for number in range(KILLS):
        victim = Victim(location, number)
        victims.append(victim)
        mode = rng.choice(["starting", "after-commit", "mid-write", "mid-write"])
        modes[mode] = modes.get(mode, 0) + 1
        if mode == "starting":  # while importing, opening, or in the first write
            await asyncio.sleep(rng.uniform(0.05, 0.6))
        else:
            victim.wait_lines(1 + rng.randrange(0, 4))  # "ready", then some commits
            if mode == "mid-write":
                await asyncio.sleep(rng.uniform(0.001, 0.08))
        victim.kill()
        promised += victim.committed()
    visible = await repo.restore_point_ids()
    assert set(promised) <= set(visible), "a restore point whose commit returned was lost"

    # every visible restore point is complete and holds exactly its image
    for rp_id in visible:
        rp = await repo.load(rp_id)
        assert await read_all(repo, rp_id) == await crash_writer.image_of(repo, rp), rp_id
    report = await check(repo, read_data=1.0)
    assert report.ok, (report.damaged_chunks, report.damaged_restore_points)
    assert report.restore_points == len(visible)

    # the crashes' leftovers: temporary files may exist on disk, but never in a listing
    listed = [info.key async for info in repo.backend.list("")]
    assert not [k for k in listed if os.path.basename(k).startswith(".tmp-")]
    assert all(k == "config" or k.startswith(("chunks/", "manifests/")) for k in listed)
    on_disk_tmp = [n for _, _, files in os.walk(location) for n in files if n.startswith(".tmp-")]
    referenced = set().union(*[(await repo.load(i)).chunk_ids() for i in visible])
    stored = {k.rsplit("/", 1)[1] for k in listed if k.startswith("chunks/")}
    orphans = stored - referenced

    # chunks of killed writes no manifest names are intact too (never partial under their name)
    leftovers = [await repo.get_chunk(cid) for cid in sorted(orphans)]
    whole = [w for w in leftovers if len(w) == crash_writer.CHUNK][:50]  # not an image's short tail

    # a new writer on top of the leftovers: dedup with orphan chunks is harmless
    writer = Writer(repo, workers=4)
    try:
        pool = [crash_writer.pool_window(i) for i in range(crash_writer.POOL)]
        image = b"".join(whole + pool) + bytes(12345)
        disk, stats = await writer.write_disk(
            BytesSource(image), key=1, capacity=len(image), file="after/disk"
        )
        rp = restore_point(vm_name="after", started=crash_writer.NOW, finished=crash_writer.NOW, disks=[disk])
        await repo.commit(rp)
        orphan_dedup = [c for c in disk.chunk_ids() if c in orphans]
        for run_id in ("after-1", "after-2"):
            parent = rp
            image, ranges = crash_writer.apply(image, run_id)
            disk, _ = await writer.write_disk(
                BytesSource(image),
                key=1,
                capacity=len(image),
                file="after/disk",
                parent=parent.disks[0],
                parent_id=parent.id,
                changed=ranges,
            )
            rp = restore_point(
                vm_name="after",
                started=parent.finished,
                finished=parent.finished,
                disks=[disk],
                parent=parent.id,
            )
            await repo.commit(rp)
            assert await read_all(repo, rp.id) == image
    finally:
        writer.close()
    assert stats.chunks_reused >= len(orphan_dedup) > 0
    assert {chunk_id(w) for w in whole} <= set(orphan_dedup), "leftover chunks were not reused"
    report = await check(repo, read_data=1.0)
    assert report.ok and report.restore_points == len(visible) + 3
    await repo.backend.close()
    print(
        f"\n{KILLS} kills {modes}: {len(visible)} restore points visible ({len(promised)} promised),"
        f" {len(orphans)} orphan chunks ({len(orphan_dedup)} reused by the new write),"
        f" {len(on_disk_tmp)} .tmp- leftovers on disk"
    )
