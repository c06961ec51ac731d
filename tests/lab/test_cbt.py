"""Changed block tracking: QueryChangedDiskAreas with '*' and with change ids, paging, faults."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim, vmodl

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from tests.plugins.lab import (
    MiB,
    changed_areas,
    connect,
    disconnect,
    disks_of,
    find_vm,
    wait_task,
)

BLOCK = 64 * 1024
CHANGE_ID = re.compile(r"^52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/\d+$")


def nonzero_areas(data: bytes) -> list[tuple[int, int]]:
    """What '*' must answer: the non-zero 64 KiB blocks, adjacent ones merged."""
    out: list[tuple[int, int]] = []
    for off in range(0, len(data), BLOCK):
        blk = data[off : off + BLOCK]
        if blk.count(0) == len(blk):
            continue
        if out and sum(out[-1]) == off:
            out[-1] = (out[-1][0], out[-1][1] + len(blk))
        else:
            out.append((off, len(blk)))
    return out


def snapshot(vm: vim.VirtualMachine, name: str) -> Any:
    return wait_task(vm.CreateSnapshot_Task(name, "", False, False))


def test_star_lists_allocated_areas(lab: Lab) -> None:
    si = connect(lab)
    try:
        vm = find_vm(si, "vm1")
        snap = snapshot(vm, "s1")
        for d in lab.vm("vm1")["disks"]:
            dev = disks_of(snap.config)[d["key"]]
            assert CHANGE_ID.match(dev.backing.changeId), dev.backing.changeId
            areas, calls = changed_areas(vm, snap, d["key"], "*", d["capacity"])
            assert calls == 1
            assert areas == nonzero_areas(Path(d["flat_path"]).read_bytes())
    finally:
        disconnect(si)


def test_since_change_id_lists_written_blocks_even_identical(lab: Lab) -> None:
    si = connect(lab)
    key = 2001
    cap = lab.vm("vm1")["disks"][1]["capacity"]
    try:
        vm = find_vm(si, "vm1")
        s1 = snapshot(vm, "s1")
        cid1 = disks_of(s1.config)[key].backing.changeId
        wait_task(s1.RemoveSnapshot_Task(False))
        same = lab.guest_read("vm1", key, 3 * BLOCK, 10)
        lab.guest_write("vm1", key, 3 * BLOCK, same)  # identical bytes: still a changed block
        lab.guest_write("vm1", key, 10 * BLOCK - 5, b"x" * 10)  # straddles blocks 9 and 10
        lab.guest_write("vm1", key, cap - 100, b"tail" * 25)  # last, partial block
        s2 = snapshot(vm, "s2")
        cid2 = disks_of(s2.config)[key].backing.changeId
        assert cid2.split("/")[0] == cid1.split("/")[0] and cid2 != cid1
        areas, _ = changed_areas(vm, s2, key, cid1, cap)
        last = (cap - 1) // BLOCK * BLOCK
        assert areas == [(3 * BLOCK, BLOCK), (9 * BLOCK, 2 * BLOCK), (last, cap - last)]
        assert changed_areas(vm, s2, key, cid2, cap)[0] == []
        assert changed_areas(vm, s2, 2000, disks_of(s2.config)[2000].backing.changeId, 8 * MiB)[0] == []
        # a change id survives removal of the snapshot it came from
        wait_task(s2.RemoveSnapshot_Task(False))
        lab.guest_write("vm1", key, 0, b"new")
        s3 = snapshot(vm, "s3")
        assert changed_areas(vm, s3, key, cid2, cap)[0] == [(0, BLOCK)]
        assert len(changed_areas(vm, s3, key, cid1, cap)[0]) == 4
    finally:
        disconnect(si)


def test_without_a_snapshot_a_powered_off_vm_answers_up_to_now(lab: Lab) -> None:
    si = connect(lab)
    key = 2001
    try:
        vm = find_vm(si, "vm1")
        s1 = snapshot(vm, "s1")
        cid1 = disks_of(s1.config)[key].backing.changeId
        wait_task(s1.RemoveSnapshot_Task(False))
        lab.guest_write("vm1", key, 5 * BLOCK + 1, b"y")
        if vm.runtime.powerState != "poweredOn":
            wait_task(vm.PowerOnVM_Task())
        expect_fault(vim.fault.InvalidState, lambda: vm.QueryChangedDiskAreas(None, key, 0, cid1))
        wait_task(vm.PowerOffVM_Task())
        info = vm.QueryChangedDiskAreas(None, key, 0, cid1)
        assert [(a.start, a.length) for a in info.changedArea] == [(5 * BLOCK, BLOCK)]
        expect_fault(vim.fault.FileFault, lambda: vm.QueryChangedDiskAreas(None, key, 0, "bogus"))
    finally:
        disconnect(si)


def test_replies_are_paged(lab_factory: Callable[[LabSpec], Lab]) -> None:
    lab = lab_factory(
        LabSpec(
            vms=(VMSpec(name="p", disks=(DiskSpec(size=4 * MiB, seed=5),), cbt=True),),
            cbt_max_areas=2,
        )
    )
    d = lab.vm("p")["disks"][0]
    si = connect(lab)
    try:
        vm = find_vm(si, "p")
        snap = snapshot(vm, "s1")
        expected = nonzero_areas(Path(d["flat_path"]).read_bytes())
        assert len(expected) > 4
        areas, calls = changed_areas(vm, snap, d["key"], "*", d["capacity"])
        assert areas == expected and calls >= len(expected) // 2
        first = vm.QueryChangedDiskAreas(snap, d["key"], 0, "*")
        assert len(first.changedArea) == 2
        assert first.length == sum(first.changedArea[-1].__dict__[k] for k in ("start", "length"))
    finally:
        disconnect(si)


def expect_fault(kind: type[Exception], fn: Callable[[], object]) -> None:
    with pytest.raises(kind):
        fn()


def test_bad_arguments_and_unknown_ids(lab: Lab) -> None:
    si = connect(lab)
    try:
        vm = find_vm(si, "vm1")
        snap = snapshot(vm, "s1")
        cid = disks_of(snap.config)[2000].backing.changeId
        expect_fault(vmodl.fault.InvalidArgument, lambda: vm.QueryChangedDiskAreas(snap, 9999, 0, "*"))
        expect_fault(vmodl.fault.InvalidArgument, lambda: vm.QueryChangedDiskAreas(snap, 2000, 8 * MiB, "*"))
        expect_fault(vim.fault.FileFault, lambda: vm.QueryChangedDiskAreas(snap, 2000, 0, "bogus"))
        unknown = "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1"
        expect_fault(vim.fault.FileFault, lambda: vm.QueryChangedDiskAreas(snap, 2000, 0, unknown))
        future = cid.split("/")[0] + "/99"
        expect_fault(vim.fault.FileFault, lambda: vm.QueryChangedDiskAreas(snap, 2000, 0, future))
        # a snapshot taken without CBT: FileFault, even for '*'
        vm2 = find_vm(si, "vm2")
        s2 = snapshot(vm2, "nocbt")
        assert not disks_of(s2.config)[2000].backing.changeId
        expect_fault(vim.fault.FileFault, lambda: vm2.QueryChangedDiskAreas(s2, 2000, 0, "*"))
    finally:
        disconnect(si)


def reconfig(vm: vim.VirtualMachine, spec: vim.vm.ConfigSpec) -> None:
    wait_task(vm.ReconfigVM_Task(spec))


def test_cbt_reset_and_resize_make_ids_stale(lab: Lab) -> None:
    si = connect(lab)
    try:
        vm = find_vm(si, "vm1")
        s1 = snapshot(vm, "s1")
        cid = disks_of(s1.config)[2000].backing.changeId
        wait_task(vm.RemoveAllSnapshots_Task())
        reconfig(vm, vim.vm.ConfigSpec(changeTrackingEnabled=False))
        reconfig(vm, vim.vm.ConfigSpec(changeTrackingEnabled=True))
        assert vm.config.changeTrackingEnabled is True
        s2 = snapshot(vm, "s2")
        cid2 = disks_of(s2.config)[2000].backing.changeId
        assert cid2.split("/")[0] != cid.split("/")[0]
        expect_fault(vim.fault.FileFault, lambda: vm.QueryChangedDiskAreas(s2, 2000, 0, cid))
        assert changed_areas(vm, s2, 2000, cid2, 8 * MiB)[0] == []
        wait_task(vm.RemoveAllSnapshots_Task())
        # growing the disk resets CBT as well
        dev = disks_of(vm.config)[2000]
        dev.capacityInKB = 10 * 1024
        dev.capacityInBytes = 10 * MiB
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev)
        reconfig(vm, vim.vm.ConfigSpec(deviceChange=[change]))
        assert disks_of(vm.config)[2000].capacityInBytes == 10 * MiB
        assert (lab.datastore_dir / "vm1" / "vm1-flat.vmdk").stat().st_size == 10 * MiB
        s3 = snapshot(vm, "s3")
        expect_fault(vim.fault.FileFault, lambda: vm.QueryChangedDiskAreas(s3, 2000, 0, cid2))
        assert vm.QueryChangedDiskAreas(s3, 2000, 9 * MiB, "*").length == MiB
    finally:
        disconnect(si)
