"""Inventory on demand: VMs, disk sizes, datastore layout and deterministic, sparse content."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from tests.plugins.lab import MiB, connect, disconnect, disks_of, download, find_vm, folder_url

SEG = 64 * 1024


def test_inventory_line_describes_the_lab(lab: Lab) -> None:
    inv = lab.inventory
    assert lab.sdk_url == f"http://127.0.0.1:{lab.port}/sdk"
    assert inv["datacenter"] == "DC0" and inv["datastore"] == "LocalDS_0"
    assert [vm["name"] for vm in inv["vms"]] == ["vm1", "vm2"]
    vm1 = lab.vm("vm1")
    assert vm1["moref"].startswith("vm-") and len(vm1["uuid"]) == 36
    d0, d1 = vm1["disks"]
    assert (d0["key"], d0["capacity"]) == (2000, 8 * MiB)
    assert (d1["key"], d1["capacity"]) == (2001, 5 * MiB + 3 * 1024)
    assert d0["vmdk"] == "[LocalDS_0] vm1/vm1.vmdk"
    assert d1["flat"] == "[LocalDS_0] vm1/vm1_1-flat.vmdk"
    assert Path(d1["flat_path"]) == lab.datastore_dir / "vm1" / "vm1_1-flat.vmdk"


def test_vsphere_reports_real_capacities(lab: Lab) -> None:
    si = connect(lab)
    try:
        content = si.RetrieveContent()
        assert [dc.name for dc in content.rootFolder.childEntity] == ["DC0"]
        vm = find_vm(si, "vm1")
        assert vm.config.changeTrackingEnabled is True
        assert vm.runtime.powerState == "poweredOn"
        assert [ds.name for ds in vm.datastore] == ["LocalDS_0"]
        assert vm.network[0].name == "VM Network"
        for d in lab.vm("vm1")["disks"]:
            dev = disks_of(vm.config)[d["key"]]
            size = os.path.getsize(d["flat_path"])
            assert dev.capacityInBytes == size == d["capacity"]
            assert dev.capacityInKB * 1024 == size
            assert dev.backing.fileName == d["vmdk"]
            assert dev.backing.thinProvisioned is True
        vm2 = find_vm(si, "vm2")
        assert vm2.config.changeTrackingEnabled is False
        assert vm2.runtime.powerState == "poweredOn"
    finally:
        disconnect(si)


def test_datastore_layout_and_descriptor(lab: Lab) -> None:
    vmdir = lab.datastore_dir / "vm1"
    names = {p.name for p in vmdir.iterdir()}
    assert {"vm1.vmx", "vm1.nvram", "vm1.vmdk", "vm1-flat.vmdk", "vm1_1.vmdk"} <= names
    assert 'displayName = "vm1"' in (vmdir / "vm1.vmx").read_text()
    desc = (vmdir / "vm1_1.vmdk").read_text()
    assert desc.startswith("# Disk DescriptorFile")
    sectors = (5 * MiB + 3 * 1024) // 512
    assert re.search(rf'^RW {sectors} VMFS "vm1_1-flat.vmdk"$', desc, re.M)
    assert 'ddb.thinProvisioned = "1"' in desc


def test_content_is_mixed_sparse_and_downloadable(lab: Lab) -> None:
    d = lab.vm("vm1")["disks"][0]
    data = Path(d["flat_path"]).read_bytes()
    segs = [data[i : i + SEG] for i in range(0, len(data), SEG)]
    zero = [s for s in segs if s.count(0) == len(s)]
    repetitive = [s for s in segs if s not in zero and len(set(s[:4096])) < 64]
    random = [s for s in segs if len(set(s[:4096])) > 200]
    assert zero and repetitive and random, (len(zero), len(repetitive), len(random))
    # zero regions are holes: the file takes less space than its size
    assert os.stat(d["flat_path"]).st_blocks * 512 <= len(data) - len(zero) * SEG + SEG
    assert download(lab, d["datastore_path"]) == data
    req = urllib.request.Request(
        folder_url(lab, d["datastore_path"]), headers={"Range": "bytes=65536-131071"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 206 and resp.read() == data[65536:131072]
    # the odd-sized disk ends with a partial segment
    d1 = lab.vm("vm1")["disks"][1]
    assert len(download(lab, d1["datastore_path"])) == 5 * MiB + 3 * 1024


def test_content_is_deterministic_per_seed(lab_factory: Callable[[LabSpec], Lab]) -> None:
    spec = LabSpec(
        vms=(
            VMSpec(
                name="a",
                disks=(
                    DiskSpec(size=2 * MiB, seed=7),
                    DiskSpec(size=2 * MiB, seed=8),
                    DiskSpec(size=1 * MiB + 1024, seed=7, layout="zero"),
                ),
                power_on=False,
            ),
        )
    )
    first, second = lab_factory(spec), lab_factory(spec)
    a1, b1, z1 = (Path(d["flat_path"]).read_bytes() for d in first.vm("a")["disks"])
    a2, b2, _ = (Path(d["flat_path"]).read_bytes() for d in second.vm("a")["disks"])
    assert a1 == a2 and b1 == b2 and a1 != b1
    assert z1 == bytes(1 * MiB + 1024)


def test_large_disk_is_generated_fast(lab_factory: Callable[[LabSpec], Lab]) -> None:
    t0 = time.monotonic()
    lab = lab_factory(LabSpec(vms=(VMSpec(name="big", disks=(DiskSpec(size=256 * MiB),)),)))
    assert time.monotonic() - t0 < 15
    assert os.path.getsize(lab.vm("big")["disks"][0]["flat_path"]) == 256 * MiB


@pytest.fixture
def flat_bytes(lab: Lab) -> bytes:
    return Path(lab.vm("vm1")["disks"][1]["flat_path"]).read_bytes()


async def test_async_download_with_aiohttp(lab: Lab, flat_bytes: bytes) -> None:
    import aiohttp

    d, data = lab.vm("vm1")["disks"][1], flat_bytes
    params = {"dcPath": lab.datacenter, "dsName": lab.datastore}
    async with aiohttp.ClientSession() as session:
        url = f"{lab.url}/folder/{d['datastore_path']}"
        async with session.get(url, params=params) as resp:
            assert resp.status == 200 and await resp.read() == data
        async with session.get(url, params=params, headers={"Range": "bytes=1024-2047"}) as resp:
            assert resp.status == 206 and await resp.read() == data[1024:2048]
