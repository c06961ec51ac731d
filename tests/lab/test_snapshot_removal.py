"""Snapshot removal never loses a disk: any snapshot of a chain, in any order, with or without
removeChildren, racing removals and RemoveAllSnapshots_Task keep every remaining snapshot's
content and the current content byte-identical, delete no file in use and leave none behind.

Each test keeps the expected content of every disk (now and as each snapshot froze it) and
checks it after every removal through `/folder/` downloads of the snapshot's own backing, the
guest read API and the lab's SHA-256, plus CBT change ids taken before the removals.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyVmomi import vim, vmodl

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from tests.plugins.lab import changed_areas, connect, disconnect, disks_of, download, folder_url, wait_task

GRAIN = 64 * 1024
SIZES = (640 * 1024 + 3 * 1024, 384 * 1024)  # one not a multiple of the grain
EMPTY = LabSpec(vms=())
DELTA = re.compile(r"-\d{6}\.vmdk$")


@dataclass
class Snap:
    name: str
    obj: Any
    parent: str | None
    content: dict[int, bytes]  # key -> content when taken
    change_ids: dict[int, str]
    moref: str = ""

    def __post_init__(self) -> None:
        self.moref = self.obj._moId


@dataclass
class Model:
    """A VM of the lab and what its disks must hold."""

    lab: Lab
    si: Any
    name: str
    vm: Any
    current: dict[int, bytearray]
    snaps: dict[str, Snap] = field(default_factory=dict)
    cur_snap: str | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    written: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # key -> (offset, len)
    counter: int = 0

    @classmethod
    def new(cls, lab: Lab, si: Any, name: str, seed: int = 0) -> Model:
        disks = tuple(DiskSpec(size=s, seed=seed + i) for i, s in enumerate(SIZES))
        entry = lab.add_vm(VMSpec(name=name, disks=disks, cbt=True))
        vm = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
        current = {
            d["key"]: bytearray(lab.guest_read(name, d["key"], 0, d["capacity"])) for d in entry["disks"]
        }
        return cls(lab=lab, si=si, name=name, vm=vm, current=current, rng=random.Random(seed))

    def write(self) -> None:
        for key, data in self.current.items():
            for _ in range(2):
                length = self.rng.choice((1, 100, 4096, GRAIN, GRAIN + 7, 3 * GRAIN))
                offset = self.rng.randrange(0, len(data) - length)
                payload = self.rng.randbytes(length)
                self.lab.guest_write(self.name, key, offset, payload)
                data[offset : offset + length] = payload
                self.written.setdefault(key, []).append((offset, length))

    def snapshot(self) -> Snap:
        self.counter += 1
        name = f"vbm-{self.counter}"
        obj = wait_task(self.vm.CreateSnapshot_Task(name, "probe", False, False))
        disks = disks_of(obj.config)
        snap = Snap(
            name=name,
            obj=obj,
            parent=self.cur_snap,
            content={k: bytes(v) for k, v in self.current.items()},
            change_ids={k: disks[k].backing.changeId for k in self.current},
        )
        self.snaps[name] = snap
        self.cur_snap = name
        return snap

    def descendants(self, name: str) -> list[str]:
        kids = [s.name for s in self.snaps.values() if s.parent == name]
        return kids + [d for k in kids for d in self.descendants(k)]

    def forget(self, name: str, children: bool) -> None:
        """What vSphere's tree does on a removal of `name`."""
        snap = self.snaps[name]
        gone = [name] + (self.descendants(name) if children else [])
        for s in self.snaps.values():
            if s.parent == name and not children:
                s.parent = snap.parent
        if self.cur_snap in gone:
            self.cur_snap = snap.parent
        for g in gone:
            del self.snaps[g]

    def remove(self, name: str, children: bool = False) -> None:
        wait_task(self.snaps[name].obj.RemoveSnapshot_Task(removeChildren=children))
        self.forget(name, children)

    def remove_all(self) -> None:
        wait_task(self.vm.RemoveAllSnapshots_Task())
        self.snaps.clear()
        self.cur_snap = None

    def check(self) -> None:
        """Every remaining snapshot and the current state hold exactly what they should."""
        names = sorted(self.snaps)
        assert sorted(self.lab.snapshots(self.name)) == names
        for snap in self.snaps.values():
            disks = disks_of(snap.obj.config)
            for key, want in snap.content.items():
                backing = disks[key].backing.fileName  # "[LocalDS_0] vm/vm-00000N.vmdk"
                path = backing.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
                got = download(self.lab, path)
                assert got == want, f"{self.name}: snapshot {snap.name} disk {key} ({backing}) changed"
                assert disks[key].backing.changeId == snap.change_ids[key]
                sha = self.lab.disk_sha256(self.name, key, snapshot=snap.moref)
                assert sha == hashlib.sha256(want).hexdigest()
        for key, want in self.current.items():
            assert self.lab.guest_read(self.name, key, 0, len(want)) == want, f"current disk {key} changed"
            assert self.lab.disk_sha256(self.name, key) == hashlib.sha256(want).hexdigest()
        self.check_files()

    def check_files(self) -> None:
        """The VM's folder holds exactly the files of its chains (no orphan, none missing)."""
        state = next(v for v in self.lab.state()["vms"] if v["name"] == self.name)
        chains = {p.split("] ", 1)[1].split("/", 1)[1] for d in state["disks"] for p in d["chain"]}
        vmdir = self.lab.datastore_dir / self.name
        files = {p.name for p in vmdir.iterdir()}
        descriptors = {
            f for f in files if f.endswith(".vmdk") and not f.endswith(("-flat.vmdk", "-delta.vmdk"))
        }
        assert descriptors == chains
        for c in chains:
            data = c.removesuffix(".vmdk") + ("-delta.vmdk" if DELTA.search(c) else "-flat.vmdk")
            assert data in files, f"{data} is missing"
        deltas = {f for f in files if f.endswith("-delta.vmdk")}
        assert deltas == {c.removesuffix(".vmdk") + "-delta.vmdk" for c in chains if DELTA.search(c)}
        vmsn = {f for f in files if f.endswith(".vmsn")}
        assert len(vmsn) == len(self.snaps)


@pytest.fixture
def empty_lab(lab_factory: Callable[[LabSpec], Lab]) -> Lab:
    return lab_factory(EMPTY)


@pytest.fixture
def si(empty_lab: Lab) -> Any:
    si = connect(empty_lab)
    yield si
    disconnect(si)


def test_removal_in_every_order(empty_lab: Lab, si: Any) -> None:
    """4 snapshots with writes between them, removed one at a time in all 24 orders."""
    m = Model.new(empty_lab, si, "orders")
    for order in itertools.permutations(range(4)):
        snaps = []
        for _ in range(4):
            m.write()
            snaps.append(m.snapshot().name)
        m.write()
        m.check()
        for i in order:
            m.remove(snaps[i])
            m.check()
            m.write()


def test_probe_rounds_of_five_overlapping_snapshots(empty_lab: Lab, si: Any) -> None:
    """The probe that lost a base disk: rounds of 5 vbm-* snapshots removed in shuffled order.
    With vcsim's own removal (layoutEx keys renumbered by each removal's RefreshStorageInfo) the
    6th round deleted vm-flat.vmdk; here every round keeps every file and byte."""
    m = Model.new(empty_lab, si, "probe")
    rng = random.Random(1)
    for _ in range(6):
        names = []
        for _ in range(5):
            names.append(m.snapshot().name)
            m.write()
        rng.shuffle(names)
        for name in names:
            m.remove(name)
            m.check()
    assert (empty_lab.datastore_dir / "probe" / "probe-flat.vmdk").is_file()


def test_remove_children_middle_and_remove_all(empty_lab: Lab, si: Any) -> None:
    m = Model.new(empty_lab, si, "children")
    names = []
    for _ in range(5):
        m.write()
        names.append(m.snapshot().name)
    m.write()
    m.remove(names[2], children=True)  # the middle one and everything after it
    m.check()
    assert sorted(m.snaps) == names[:2]
    m.write()
    names += [m.snapshot().name]
    m.write()
    m.remove(names[0], children=False)  # the oldest: merged into the base
    m.check()
    m.remove_all()
    m.check()
    assert not list((empty_lab.datastore_dir / "children").glob("*-0000*"))


def test_revert_then_branch_then_remove(empty_lab: Lab, si: Any) -> None:
    """After a revert, new snapshots branch in the tree (the lab's disks stay linear)."""
    m = Model.new(empty_lab, si, "branch")
    a = m.snapshot()
    m.write()
    b = m.snapshot()
    m.write()
    wait_task(a.obj.RevertToSnapshot_Task())
    m.cur_snap = a.name
    c = m.snapshot()  # a child of a, sibling of b
    m.write()
    assert c.parent == a.name
    m.remove(a.name, children=False)
    m.check()
    m.remove(c.name, children=True)
    m.check()
    m.remove(b.name)
    m.check()


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("snap"), st.integers(0, 0), st.booleans()),
        st.tuples(st.just("remove"), st.integers(0, 10), st.booleans()),
        st.tuples(st.just("revert"), st.integers(0, 10), st.booleans()),
        st.tuples(st.just("all"), st.integers(0, 0), st.booleans()),
    ),
    min_size=3,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_sequences(empty_lab: Lab, si: Any, ops: list[tuple[str, int, bool]]) -> None:
    """Random snapshot trees (creates, removals with/without children, reverts, remove-all)."""
    global _example
    _example += 1
    m = Model.new(empty_lab, si, f"seq{_example}", seed=_example)
    for op, pick, flag in ops:
        names = sorted(m.snaps, key=lambda n: int(n.split("-")[1]))
        if op == "snap" or not names:
            m.snapshot()
        elif op == "remove":
            m.remove(names[pick % len(names)], children=flag)
        elif op == "revert":
            target = m.snaps[names[pick % len(names)]]
            wait_task(target.obj.RevertToSnapshot_Task())
            m.cur_snap = target.name
        else:
            m.remove_all()
        m.write()
        m.check()
    m.remove_all()
    m.check()


_example = 0


def _remove_in_thread(lab: Lab, moref: str, errors: list[BaseException], children: bool = False) -> None:
    si = connect(lab)
    try:
        snap = vim.vm.Snapshot(moref, si._stub)
        wait_task(snap.RemoveSnapshot_Task(removeChildren=children))
    except BaseException as e:  # collected for the main thread
        errors.append(e)
    finally:
        disconnect(si)


def test_concurrent_removals_on_one_vm(empty_lab: Lab, si: Any) -> None:
    """The probe's case: 5 overlapping vbm-* snapshots removed at once, in racing calls."""
    m = Model.new(empty_lab, si, "race")
    for round_ in range(4):
        made = []
        mark: dict[int, int] = {}
        for _ in range(5):
            m.write()
            made.append(m.snapshot())
            mark = mark or {k: len(m.written[k]) for k in m.current}
        m.write()
        first_ids = made[0].change_ids
        rng = random.Random(round_)
        victims = rng.sample(made, 5 if round_ % 2 == 0 else 3)
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_remove_in_thread, args=(empty_lab, s.moref, errors)) for s in victims
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        for s in victims:
            m.forget(s.name, children=False)
        m.check()
        # CBT: an id taken before the removals still reports every block written since
        m.write()
        probe = m.snapshot()
        for key, cid in first_ids.items():
            cap = len(m.current[key])
            areas, _ = changed_areas(m.vm, probe.obj, key, cid, cap)
            got = {
                b for start, length in areas for b in range(start // GRAIN, (start + length - 1) // GRAIN + 1)
            }
            want: set[int] = set()
            for offset, length in m.written[key][mark[key] :]:  # the writes since the first snapshot
                want |= set(range(offset // GRAIN, (offset + length - 1) // GRAIN + 1))
            assert got == want, f"disk {key}: CBT since {cid}"
        m.remove_all()
        m.check()
        m.written.clear()


def test_racing_remove_all_and_single_removals(empty_lab: Lab, si: Any) -> None:
    m = Model.new(empty_lab, si, "raceall")
    made = []
    for _ in range(4):
        m.write()
        made.append(m.snapshot())
    m.write()
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_remove_in_thread, args=(empty_lab, s.moref, errors)) for s in made[:2]
    ]

    def remove_all() -> None:
        si2 = connect(empty_lab)
        try:
            vm = si2.content.searchIndex.FindByInventoryPath("DC0/vm/raceall")
            wait_task(vm.RemoveAllSnapshots_Task())
        except BaseException as e:
            errors.append(e)
        finally:
            disconnect(si2)

    threads.append(threading.Thread(target=remove_all))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # a single removal that lost the race finds its snapshot gone, as in vSphere
    assert all(isinstance(e, vmodl.fault.ManagedObjectNotFound) for e in errors), errors
    m.snaps.clear()
    m.cur_snap = None
    m.check()


def test_download_in_flight_survives_a_merge_below_it(empty_lab: Lab, si: Any) -> None:
    """A snapshot's disk being read while an older snapshot is removed (its level is merged
    into the one below): the reader goes on and gets exactly the snapshot's content."""
    m = Model.new(empty_lab, si, "reader")
    m.write()
    s1 = m.snapshot()
    m.write()
    s2 = m.snapshot()  # its disk is the delta vm-000001
    m.write()
    key = next(iter(m.current))
    path = (
        disks_of(s2.obj.config)[key].backing.fileName.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
    )
    empty_lab.datastore_limits(empty_lab.datastore, bandwidth_mbps=4)  # ~0.5 MB/s: ~1.3 s for the disk
    try:
        result: dict[str, bytes] = {}

        def read() -> None:
            with urllib.request.urlopen(folder_url(empty_lab, path), timeout=30) as resp:
                result["data"] = resp.read()

        t = threading.Thread(target=read)
        t.start()
        time.sleep(0.4)
        m.remove(s1.name)  # merges vm-000001 (s2's disk) into the base
        t.join(30)
    finally:
        empty_lab.datastore_limits(empty_lab.datastore, bandwidth_mbps=0)
    assert result["data"] == s2.content[key]
    m.check()
