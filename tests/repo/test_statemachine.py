"""Random histories against a model: fulls, incrementals, forgets, corruptions, reads, checks.

The model knows, for every committed restore point, the exact image it was made from, and for
every chunk whether its stored object is intact. After every step: each intact restore point
reads back byte-identical, each damaged one raises ChunkError naming a damaged chunk and itself,
`check` finds exactly the damaged chunks and blames exactly the restore points that use them, the
visible restore points are exactly the committed ones, and no chunk is stored for a zero window.

Every bit flip must be detected: chunk objects carry a CRC-32 of their stored bytes, so even a
flip in bits zstd ignores (padding of an entropy table description) is reported. The only flip
that may decode is one that undoes an earlier flip of the same bit.
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from shared.repo import (
    ChunkError,
    LocalBackend,
    Repository,
    Writer,
    check,
    read_disk,
    restore_point,
)
from shared.repo import chunk as chunks
from shared.repo.repository import chunk_key
from tests.repo.conftest import BytesSource

T = TypeVar("T")
NOW = datetime(2026, 11, 26, tzinfo=UTC)
DISKS = ("alpha", "beta", "gamma")
MAX_WINDOWS = 20

# Counted across every example of the run (reported by the test at the end).
STATS = {"histories": 0, "steps": 0, "commits": 0, "corruptions": 0}


@st.composite
def images(draw: st.DrawFn, chunk_size: int) -> bytes:
    """0..MAX_WINDOWS windows, often with a short tail; segments of zeros, random or repeated bytes."""
    windows = draw(st.integers(0, MAX_WINDOWS))
    tail = draw(st.sampled_from([0, 0, 1, 511, 4095, chunk_size - 1]))
    size = min(windows * chunk_size + tail, MAX_WINDOWS * chunk_size + chunk_size - 1)
    return fill(draw, size, chunk_size)


def fill(draw: st.DrawFn, size: int, chunk_size: int) -> bytes:
    out = bytearray()
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    while len(out) < size:
        kind = draw(st.sampled_from(["zero", "zero", "random", "repeat", "shared"]))
        n = min(size - len(out), draw(st.sampled_from([1, 100, chunk_size // 2, chunk_size, 3 * chunk_size])))
        if kind == "zero":
            out += bytes(n)
        elif kind == "random":
            out += rng.randbytes(n)
        elif kind == "repeat":
            out += bytes([draw(st.integers(1, 255))]) * n
        else:  # a window-aligned block every image may share: dedup across disks and runs
            block = SHARED[draw(st.integers(0, len(SHARED) - 1))][:chunk_size]
            out += (block * (n // len(block) + 1))[:n]
    return bytes(out)


SHARED = [bytes([i]) * 16 + bytes(range(256)) * 64 for i in range(1, 4)]


@dataclass
class Point:
    rp_id: str
    disk: str
    image: bytes
    chunk_ids: frozenset[str]


class RepoMachine(RuleBasedStateMachine):
    points = Bundle("points")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="vbm-sm-"))
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[str] = []  # e.g. "Task exception was never retrieved"
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx["message"]))
        self.repo: Repository | None = None
        self.writer: Writer | None = None
        self.chunk_size = 4096
        self.committed: dict[str, Point] = {}
        self.present: set[str] = set()  # chunk objects that exist (maybe damaged, maybe empty)
        self.damaged: dict[str, str] = {}  # chunk id -> kind of damage that made it unreadable
        STATS["histories"] += 1

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
            if self.repo is not None:
                self.run(self.repo.backend.close())
            self.run(self.loop.shutdown_default_executor())
            gc.collect()  # a task dropped with an exception reports it when collected
            assert not self.loop_errors, self.loop_errors
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(chunk_size=st.sampled_from([4096, 8192]))
    def init_repo(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.repo = self.run(Repository.init(LocalBackend(self.tmp / "repo"), chunk_size=chunk_size))
        self.writer = Writer(self.repo, workers=3)

    # helpers
    @property
    def r(self) -> Repository:
        assert self.repo is not None
        return self.repo

    def windows(self, image: bytes) -> list[bytes]:
        cs = self.chunk_size
        return [image[o : o + cs] for o in range(0, len(image), cs)]

    def ids_of(self, image: bytes) -> frozenset[str]:
        return frozenset(chunks.chunk_id(w) for w in self.windows(image) if any(w))

    def stored(self, image: bytes, indexes: list[int] | range) -> None:
        """The writer read these windows: it stores each non-zero one the repository lacks (a
        missing or empty object counts as lacking, and is replaced with an intact one)."""
        wins = self.windows(image)
        for i in indexes:
            if not any(wins[i]):
                continue
            cid = chunks.chunk_id(wins[i])
            if cid not in self.present or self.damaged.get(cid) == "empty":
                self.present.add(cid)
                self.damaged.pop(cid, None)

    def chunk_path(self, cid: str) -> Path:
        return self.tmp / "repo" / chunk_key(cid)

    def commit(self, disk_name: str, image: bytes, disk: Any, parent: str | None) -> Point:
        rp = restore_point(vm_name=disk_name, started=NOW, finished=NOW, disks=[disk], parent=parent)
        self.run(self.r.commit(rp))
        point = Point(rp.id, disk_name, image, self.ids_of(image))
        self.committed[rp.id] = point
        STATS["commits"] += 1
        return point

    # rules
    @rule(target=points, disk_name=st.sampled_from(DISKS), data=st.data())
    def write_full(self, disk_name: str, data: st.DataObject) -> Point:
        image = data.draw(images(self.chunk_size), label="image")
        assert self.writer is not None
        disk, stats = self.run(
            self.writer.write_disk(
                BytesSource(image), key=2000, capacity=len(image), file=f"{disk_name}/{disk_name}-flat.vmdk"
            )
        )
        assert disk.built_on is None and stats.windows_read == len(self.windows(image))
        self.stored(image, range(len(self.windows(image))))
        return self.commit(disk_name, image, disk, None)

    @precondition(lambda self: bool(self.committed))
    @rule(target=points, data=st.data())
    def write_incremental(self, data: st.DataObject) -> Point:
        parent = self.committed[data.draw(st.sampled_from(list(self.committed)), label="parent")]
        image = bytearray(parent.image)
        size = len(image)
        changed: list[tuple[int, int]] = []
        for _ in range(data.draw(st.integers(0, 4), label="changes") if size else 0):
            off = data.draw(st.integers(0, size - 1))
            n = data.draw(st.integers(1, min(size - off, 3 * self.chunk_size)))
            kind = data.draw(st.sampled_from(["zero", "random", "byte", "copy"]))
            if kind == "zero":
                new = bytes(n)
            elif kind == "random":
                new = random.Random(data.draw(st.integers(0, 2**32 - 1))).randbytes(n)
            elif kind == "byte":
                new = bytes([data.draw(st.integers(0, 255))]) * n
            else:  # the content of another window: dedup inside the disk
                src = data.draw(st.integers(0, size - n))
                new = bytes(image[src : src + n])
            image[off : off + n] = new
            # the reported range covers the change, sometimes with some unchanged bytes around it
            lo = max(0, off - data.draw(st.sampled_from([0, 0, 1, 700])))
            hi = min(size, off + n + data.draw(st.sampled_from([0, 0, 1, 5000])))
            changed.append((lo, hi - lo))
        if data.draw(st.booleans(), label="extra unchanged range") and size:
            changed.append((0, 1))
        assert self.writer is not None
        parent_rp = self.run(self.r.load(parent.rp_id))
        disk, stats = self.run(
            self.writer.write_disk(
                BytesSource(bytes(image)),
                key=2000,
                capacity=size,
                file=f"{parent.disk}/{parent.disk}-flat.vmdk",
                parent=parent_rp.disks[0],
                parent_id=parent.rp_id,
                changed=changed,
            )
        )
        touched = sorted(
            {
                i
                for o, n in changed
                if n
                for i in range(o // self.chunk_size, (o + n - 1) // self.chunk_size + 1)
            }
        )
        assert disk.built_on == parent.rp_id
        assert stats.windows_read == len(touched)
        self.stored(bytes(image), touched)
        return self.commit(parent.disk, bytes(image), disk, parent.rp_id)

    @rule(point=consumes(points))
    def forget(self, point: Point) -> None:
        if point.rp_id not in self.committed:
            return
        self.run(self.r.forget(point.rp_id))
        del self.committed[point.rp_id]

    @precondition(lambda self: bool(self.present))
    @rule(data=st.data(), how=st.sampled_from(["flip", "flip", "truncate", "empty", "delete"]))
    def corrupt(self, data: st.DataObject, how: str) -> None:
        cid = data.draw(st.sampled_from(sorted(self.present)), label="chunk")
        path = self.chunk_path(cid)
        raw = path.read_bytes()
        STATS["corruptions"] += 1
        if how == "delete":
            path.unlink()
            self.present.discard(cid)
            self.damaged[cid] = "missing"
            return
        if how == "empty" or (how == "truncate" and len(raw) <= 1):
            path.write_bytes(b"")
            self.damaged[cid] = "empty"
            return
        if how == "truncate":
            cut = data.draw(st.integers(1, len(raw) - 1), label="keep")
            path.write_bytes(raw[:cut])
            self.damaged[cid] = "truncated"
            return
        if not raw:  # an empty object: a flip cannot make it more damaged
            return
        bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        was_damaged = self.damaged.pop(cid, None)
        try:
            plain = chunks.decode(bytes(flipped), cid)
        except ChunkError:
            self.damaged[cid] = was_damaged or "flipped"
            return
        # only a second flip of the same bit, undoing the first, may leave a decodable object
        assert chunks.chunk_id(plain) == cid
        assert was_damaged, f"a flip of bit {bit} of chunk {cid} went undetected"
        event("a flip undid an earlier flip")

    @precondition(lambda self: bool(self.committed))
    @rule(data=st.data())
    def read_range(self, data: st.DataObject) -> None:
        point = self.committed[data.draw(st.sampled_from(list(self.committed)), label="rp")]
        size = len(point.image)
        off = data.draw(st.integers(0, size), label="offset")
        n = data.draw(st.integers(0, size - off + 10), label="length")
        cs = self.chunk_size
        end = min(size, off + n)
        needed = {
            chunks.chunk_id(point.image[w : w + cs])
            for w in range(off - off % cs, end if end > off else off - off % cs, cs)
            if any(point.image[w : w + cs])
        }
        rp = self.run(self.r.load(point.rp_id))
        if needed & self.damaged.keys():
            with pytest.raises(ChunkError) as exc:
                self.run(self.read(rp, off, n))
            assert exc.value.chunk in needed & self.damaged.keys()
            assert exc.value.restore_point == point.rp_id and point.rp_id in str(exc.value)
        else:
            assert self.run(self.read(rp, off, n)) == point.image[off : off + n]

    async def read(self, rp: Any, offset: int = 0, length: int | None = None) -> bytes:
        return b"".join([p async for p in read_disk(self.r, rp, rp.disks[0], offset, length, ahead=2)])

    # invariants
    @invariant()
    def everything_agrees(self) -> None:
        if self.repo is None:
            return
        STATS["steps"] += 1
        assert not self.loop_errors, self.loop_errors
        assert self.run(self.r.restore_point_ids()) == sorted(self.committed)
        listed = {i.key.rsplit("/", 1)[1]: i.size for i in self.run(self.listing())}
        assert set(listed) == self.present
        zero_ids = {chunks.zero_id(self.chunk_size)}
        zero_ids |= {chunks.zero_id(len(p.image) % self.chunk_size or 1) for p in self.committed.values()}
        assert not zero_ids & set(listed), "a zero window was stored"

        referenced = {
            cid: [rp for rp, p in self.committed.items() if cid in p.chunk_ids] for cid in self.damaged
        }
        referenced = {cid: users for cid, users in referenced.items() if users}
        blamed = {rp for users in referenced.values() for rp in users}

        for rp_id, point in self.committed.items():
            rp = self.run(self.r.load(rp_id))
            d = rp.disks[0]
            assert d.capacity == len(point.image)
            assert d.chunk_ids() == point.chunk_ids
            for w_off, w_len, cid in d.windows():  # zero windows are never chunks
                assert (cid is None) == (not any(point.image[w_off : w_off + w_len]))
            if rp_id in blamed:
                with pytest.raises(ChunkError) as exc:
                    self.run(self.read(rp))
                assert exc.value.chunk in referenced and rp_id in referenced[exc.value.chunk]
                assert exc.value.restore_point == rp_id
                assert exc.value.chunk in str(exc.value) and rp_id in str(exc.value)
            else:
                assert self.run(self.read(rp)) == point.image

        full = self.run(check(self.r, read_data=1.0))
        assert set(full.damaged_chunks) == set(referenced)
        assert set(full.damaged_restore_points) == blamed
        for cid, users in referenced.items():
            for rp_id in users:
                assert any(cid in problem for problem in full.damaged_restore_points[rp_id])
        assert full.ok == (not referenced)
        assert full.chunks_referenced == len(set().union(*(p.chunk_ids for p in self.committed.values())))

        quick = self.run(check(self.r))
        structural = {c for c in referenced if self.damaged[c] in ("missing", "empty")}
        assert set(quick.damaged_chunks) == structural
        for cid in structural:
            want = "is missing" if self.damaged[cid] == "missing" else "is empty (0 bytes)"
            assert quick.damaged_chunks[cid] == want
        assert quick.chunks_read == 0

    async def listing(self) -> list[Any]:
        return [i async for i in self.r.backend.list("chunks/")]


# Hypothesis runs many histories in one test: on a 2-core machine shared with the other test
# worker (pytest-xdist) that takes longer than the suite's 120 s default.
pytestmark = pytest.mark.timeout(300)

RepoMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)


class TestRepoStateMachine(RepoMachine.TestCase):  # type: ignore[misc,valid-type]
    pass


def test_statemachine_exercised_enough() -> None:
    """Runs after the machine (file order): the histories really committed, corrupted and checked."""
    if STATS["histories"] == 0:  # run on its own (-k): nothing to count
        return
    print(f"\nstate machine: {STATS}")
    assert STATS["commits"] > 50 and STATS["corruptions"] > 10
