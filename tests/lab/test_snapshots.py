"""Real snapshot semantics: frozen base, delta disks, merge on removal; vcsim's snapshot bugs."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
from pyVmomi import vim, vmodl

from lab.launcher import Lab
from tests.plugins.lab import connect, disconnect, disks_of, download, find_vm, wait_task

BLOCK = 64 * 1024


def test_base_is_frozen_while_a_snapshot_exists_then_merged(lab: Lab) -> None:
    d = lab.vm("vm1")["disks"][1]
    key, flat = d["key"], Path(d["flat_path"])
    before = flat.read_bytes()
    si = connect(lab)
    try:
        vm = find_vm(si, "vm1")
        snap = wait_task(vm.CreateSnapshot_Task("backup", "", False, False))
        assert lab.snapshots("vm1") == ["backup"]
        # the snapshot keeps the base disk, the VM now writes to a delta
        assert disks_of(snap.config)[key].backing.fileName == "[LocalDS_0] vm1/vm1_1.vmdk"
        cur = disks_of(vm.config)[key].backing
        assert cur.fileName == "[LocalDS_0] vm1/vm1_1-000001.vmdk"
        assert cur.parent.fileName == "[LocalDS_0] vm1/vm1_1.vmdk"
        assert (lab.datastore_dir / "vm1" / "vm1_1-000001.vmdk").is_file()
        lab.guest_write("vm1", key, 100, b"A" * 1000)
        lab.guest_write("vm1", key, 5 * BLOCK, b"B" * BLOCK)
        assert lab.guest_read("vm1", key, 100, 1000) == b"A" * 1000
        assert lab.guest_read("vm1", key, 0, 100) == before[:100]
        # snapshot readers (datastore downloads of the base flat file) never see the writes
        assert download(lab, d["datastore_path"]) == before
        assert flat.read_bytes() == before
        wait_task(snap.RemoveSnapshot_Task(removeChildren=False))
        assert lab.snapshots("vm1") == []
        after = flat.read_bytes()
        expected = bytearray(before)
        expected[100:1100] = b"A" * 1000
        expected[5 * BLOCK : 6 * BLOCK] = b"B" * BLOCK
        assert after == bytes(expected)
        assert disks_of(vm.config)[key].backing.fileName == "[LocalDS_0] vm1/vm1_1.vmdk"
        assert not (lab.datastore_dir / "vm1" / "vm1_1-000001.vmdk").exists()
        assert vm.snapshot is None
    finally:
        disconnect(si)


def test_nested_snapshots_and_remove_all(lab: Lab) -> None:
    d = lab.vm("vm1")["disks"][0]
    key, flat = d["key"], Path(d["flat_path"])
    before = flat.read_bytes()
    si = connect(lab)
    try:
        vm = find_vm(si, "vm1")
        s1 = wait_task(vm.CreateSnapshot_Task("s1", "", False, False))
        lab.guest_write("vm1", key, 0, b"one")
        s2 = wait_task(vm.CreateSnapshot_Task("s2", "", False, False))
        lab.guest_write("vm1", key, 0, b"two")
        assert lab.snapshots("vm1") == ["s1", "s2"]
        assert disks_of(s1.config)[key].backing.fileName == "[LocalDS_0] vm1/vm1.vmdk"
        assert disks_of(s2.config)[key].backing.fileName == "[LocalDS_0] vm1/vm1-000001.vmdk"
        assert disks_of(vm.config)[key].backing.fileName == "[LocalDS_0] vm1/vm1-000002.vmdk"
        assert lab.guest_read("vm1", key, 0, 3) == b"two"
        assert flat.read_bytes() == before
        # each snapshot's disk reads from its backing: <disk>-00000N.vmdk -> <disk>-00000N-flat.vmdk
        assert download(lab, "vm1/vm1-flat.vmdk") == before  # s1
        assert download(lab, "vm1/vm1-000001-flat.vmdk") == b"one" + before[3:]  # s2
        assert download(lab, "vm1/vm1-000002-flat.vmdk")[:3] == b"two"  # the live disk
        wait_task(vm.RemoveAllSnapshots_Task())
        assert lab.snapshots("vm1") == []
        assert flat.read_bytes()[:3] == b"two" and flat.read_bytes()[3:] == before[3:]
        assert disks_of(vm.config)[key].backing.fileName == "[LocalDS_0] vm1/vm1.vmdk"
        assert sorted(p.name for p in (lab.datastore_dir / "vm1").glob("vm1-0*")) == []
        with pytest.raises(urllib.error.HTTPError) as err:
            download(lab, "vm1/vm1-000001-flat.vmdk")
        assert err.value.code == 404
        err.value.close()
    finally:
        disconnect(si)


def test_remove_snapshot_task_can_be_waited_for(lab: Lab) -> None:
    si = connect(lab)
    try:
        vm = find_vm(si, "vm2")
        snap = wait_task(vm.CreateSnapshot_Task("s", "", False, False))
        task = snap.RemoveSnapshot_Task(removeChildren=True)
        wait_task(task)  # raised in plain vcsim: the entity was the snapshot
        assert task.info.state == "success"
        assert task.info.entity == vm
        assert lab.snapshots("vm2") == []
    finally:
        disconnect(si)


def test_unset_properties_do_not_break_the_server(lab: Lab) -> None:
    si = connect(lab)
    try:
        vm = find_vm(si, "vm1")
        assert vm.snapshot is None  # Fetch of an unset property: vcsim panicked here
        assert vm.rootSnapshot == []
        pc = si.content.propertyCollector
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm)],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, pathSet=["snapshot", "name"]
                )
            ],
        )
        result = pc.RetrieveContents([spec])
        props = {p.name: p.val for p in result[0].propSet}
        assert props["name"] == "vm1" and props.get("snapshot") is None
        assert vm.name == "vm1"  # the server is still there
    finally:
        disconnect(si)
