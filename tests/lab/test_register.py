"""RegisterVM_Task of uploaded files (a restore): any name, disks read from the .vmx."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from lab.launcher import Lab
from tests.plugins.lab import disks_of, download, find_vm, folder_url, wait_task


def upload(lab: Lab, ds_path: str, data: bytes) -> None:
    req = urllib.request.Request(folder_url(lab, ds_path), data=data, method="PUT")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def test_register_uploaded_vm_with_its_disks(lab: Lab, lab_si: Any) -> None:
    src = lab.vm("vm1")["disks"]
    flats = [Path(d["flat_path"]).read_bytes() for d in src]
    for i, d in enumerate(src):
        name = "restored" if i == 0 else f"restored_{i}"
        desc = Path(d["vmdk_path"]).read_text().replace(Path(d["flat_path"]).name, f"{name}-flat.vmdk")
        upload(lab, f"restored/{name}.vmdk", desc.encode())
        upload(lab, f"restored/{name}-flat.vmdk", flats[i])
    vmx = (
        'displayName = "restored"\nscsi0.present = "TRUE"\nctkEnabled = "TRUE"\n'
        'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "restored.vmdk"\n'
        'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "restored_1.vmdk"\n'
    )
    upload(lab, "restored/restored.vmx", vmx.encode())
    dc = lab_si.content.rootFolder.childEntity[0]
    pool = find_vm(lab_si, "vm1").resourcePool
    task = dc.vmFolder.RegisterVM_Task(
        path="[LocalDS_0] restored/restored.vmx", name="restored-copy", asTemplate=False, pool=pool
    )
    vm = wait_task(task)
    assert vm.name == "restored-copy"
    assert vm.config.changeTrackingEnabled is True
    disks = sorted(disks_of(vm.config).values(), key=lambda d: d.key)
    assert [d.capacityInBytes for d in disks] == [d["capacity"] for d in src]
    assert [d.backing.fileName for d in disks] == [
        "[LocalDS_0] restored/restored.vmdk",
        "[LocalDS_0] restored/restored_1.vmdk",
    ]
    assert download(lab, "restored/restored_1-flat.vmdk") == flats[1]


def test_registering_a_missing_vmx_fails_and_creates_nothing(lab: Lab, lab_si: Any) -> None:
    dc = lab_si.content.rootFolder.childEntity[0]
    pool = find_vm(lab_si, "vm1").resourcePool
    task = dc.vmFolder.RegisterVM_Task(
        path="[LocalDS_0] gone/gone.vmx", name="gone", asTemplate=False, pool=pool
    )
    with pytest.raises(vim.fault.NotFound):
        wait_task(task)
    assert not (lab.datastore_dir / "gone").exists()  # vcsim alone would have made the directory
