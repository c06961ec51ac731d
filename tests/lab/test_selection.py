"""An inventory to select VMs from: folders, hosts and clusters, resource pools, datastores,
vSphere tags (the vAPI REST endpoints, as a client calls them), VMs added while the lab runs,
disks a backup must skip (independent, RDM) and a VM whose quiesce fails. All over the wire,
with pyVmomi and urllib."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pyVmomi import vim

from lab.launcher import DatastoreSpec, DiskSpec, Lab, LabError, LabSpec, TagCategorySpec, TagRef, VMSpec
from tests.plugins.lab import RestClient, changed_areas, connect, disconnect, disks_of, download, wait_task

KiB = 1024
TAGGING = "/com/vmware/cis/tagging"
ASSOC = f"{TAGGING}/tag-association"
GOLD, SILVER, PROD = TagRef("backup-policy", "gold"), TagRef("backup-policy", "silver"), TagRef("env", "prod")

SPEC = LabSpec(
    datastores=(DatastoreSpec("LocalDS_0"), DatastoreSpec("SSD_1")),
    tag_categories=(
        TagCategorySpec("backup-policy", ("gold", "silver", "unused"), cardinality="SINGLE"),
        TagCategorySpec("env", ("prod",)),
    ),
    vms=(
        VMSpec("web-1", (DiskSpec(256 * KiB),), folder="prod/web", host="DC0_C0_H0", resource_pool="web",
               tags=(GOLD, PROD), cbt=True),
        VMSpec("web-2", (DiskSpec(256 * KiB),), folder="prod/web", host="DC0_C0_H1", resource_pool="web",
               tags=(SILVER,)),
        VMSpec("db-1", (DiskSpec(256 * KiB), DiskSpec(128 * KiB, datastore="LocalDS_0")), folder="prod/db",
               host="DC0_C0_H2", datastore="SSD_1", tags=(GOLD,)),
        VMSpec("solo", (DiskSpec(128 * KiB),)),
    ),
)  # fmt: skip


@pytest.fixture
def sel_lab(lab_factory: Callable[[LabSpec], Lab]) -> Lab:
    return lab_factory(SPEC)


@pytest.fixture
def si(sel_lab: Lab) -> Any:
    si = connect(sel_lab)
    yield si
    disconnect(si)


def all_of(si: Any, kind: type) -> list[Any]:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def attached_objects(tag_id: str) -> str:
    return f"{ASSOC}/id:{tag_id}?~action=list-attached-objects"


def by_name(items: list[Any]) -> dict[str, Any]:
    return {i.name: i for i in items}


def test_folders_hosts_pools_and_datastores_agree(sel_lab: Lab, si: Any) -> None:
    vms = by_name(all_of(si, vim.VirtualMachine))
    assert sorted(vms) == ["db-1", "solo", "web-1", "web-2"]
    # folders: real Folder objects, in the tree and in container views
    folders = by_name(all_of(si, vim.Folder))
    assert {"prod", "web", "db"} <= set(folders)
    dc = si.content.rootFolder.childEntity[0]
    prod = folders["prod"]
    assert prod.parent == dc.vmFolder and prod in dc.vmFolder.childEntity
    assert set(by_name(prod.childEntity)) == {"web", "db"}
    assert set(by_name(folders["web"].childEntity)) == {"web-1", "web-2"}
    assert vms["web-1"].parent == folders["web"]
    assert si.content.searchIndex.FindByInventoryPath("DC0/vm/prod/db/db-1") == vms["db-1"]
    assert vms["solo"].parent == dc.vmFolder
    # hosts, clusters, pools: runtime.host, resourcePool and host.vm agree
    for name, host, cluster in (
        ("web-1", "DC0_C0_H0", "DC0_C0"),
        ("db-1", "DC0_C0_H2", "DC0_C0"),
        ("solo", "DC0_H0", None),
    ):
        vm = vms[name]
        assert vm.runtime.host.name == host and vm in vm.runtime.host.vm
        assert vm in vm.resourcePool.vm
        owner = vm.resourcePool.owner
        assert (owner.name if isinstance(owner, vim.ClusterComputeResource) else None) == cluster
        entry = sel_lab.vm(name)
        assert (entry["host"], entry["cluster"] or None, entry["host_moref"]) == (
            host,
            cluster,
            vm.runtime.host._moId,
        )
    web_pool = vms["web-1"].resourcePool
    assert web_pool.name == "web" and web_pool == vms["web-2"].resourcePool  # one pool, made once
    assert web_pool.parent == web_pool.owner.resourcePool
    assert vms["db-1"].resourcePool == vms["db-1"].resourcePool.owner.resourcePool  # the root pool
    # datastores: each once, mounted on every host, listing its VMs
    stores = all_of(si, vim.Datastore)
    assert sorted(d.name for d in stores) == ["LocalDS_0", "SSD_1"]
    hosts = all_of(si, vim.HostSystem)
    dirs = {d["name"]: d["dir"] for d in sel_lab.datastores}
    for ds in stores:
        assert {m.key.name for m in ds.host} == {h.name for h in hosts}
        assert ds.summary.url == dirs[ds.name]
        assert all(ds in h.datastore for h in hosts)
    ssd = by_name(stores)["SSD_1"]
    assert set(by_name(ssd.vm)) == {"db-1"}
    assert sorted(d.name for d in vms["db-1"].datastore) == ["LocalDS_0", "SSD_1"]
    assert vms["db-1"].config.files.vmPathName == "[SSD_1] db-1/db-1.vmx"
    db = sel_lab.vm("db-1")
    assert [(d["datastore"], d["vmdk"]) for d in db["disks"]] == [
        ("SSD_1", "[SSD_1] db-1/db-1.vmdk"),
        ("LocalDS_0", "[LocalDS_0] db-1/db-1_1.vmdk"),
    ]
    assert (sel_lab.datastores[1]["dir"], sel_lab.inventory["datastore"]) == (dirs["SSD_1"], "LocalDS_0")


def test_tags_through_the_rest_api(sel_lab: Lab) -> None:
    with pytest.raises(PermissionError):
        RestClient(sel_lab, password="wrong")
    rest = RestClient(sel_lab)
    cats = {}
    for cid in rest.value("GET", f"{TAGGING}/category"):
        cat = rest.value("GET", f"{TAGGING}/category/id:{cid}")
        cats[cat["name"]] = cat
    assert set(cats) == {"backup-policy", "env"} and cats["backup-policy"]["cardinality"] == "SINGLE"
    tags = {}
    for tid in rest.value("GET", f"{TAGGING}/tag"):
        tag = rest.value("GET", f"{TAGGING}/tag/id:{tid}")
        tags[(next(n for n, c in cats.items() if c["id"] == tag["category_id"]), tag["name"])] = tid
    assert set(tags) == {
        ("backup-policy", "gold"),
        ("backup-policy", "silver"),
        ("backup-policy", "unused"),
        ("env", "prod"),
    }
    web1 = sel_lab.vm("web-1")
    assert {t["id"] for t in web1["tags"]} == {tags["backup-policy", "gold"], tags["env", "prod"]}
    # the tags attached to a VM
    obj = {"object_id": {"type": "VirtualMachine", "id": web1["moref"]}}
    attached = rest.value("POST", f"{ASSOC}?~action=list-attached-tags", obj)
    assert set(attached) == {tags["backup-policy", "gold"], tags["env", "prod"]}
    # the VMs a tag is attached to
    gold = rest.value(
        "POST",
        attached_objects(tags["backup-policy", "gold"]),
    )
    assert sorted(o["id"] for o in gold) == sorted(sel_lab.vm(n)["moref"] for n in ("web-1", "db-1"))
    assert all(o["type"] == "VirtualMachine" for o in gold)
    # an empty list is a list, as vCenter answers it
    status, body = rest.call(
        "POST",
        attached_objects(tags["backup-policy", "unused"]),
    )
    assert (status, body) == (200, {"value": []})
    solo = {"object_id": {"type": "VirtualMachine", "id": sel_lab.vm("solo")["moref"]}}
    assert rest.value("POST", f"{ASSOC}?~action=list-attached-tags", solo) == []
    # several tags at once
    many = rest.value("POST", f"{ASSOC}?~action=list-attached-objects-on-tags",
                      {"tag_ids": [tags["env", "prod"]]})  # fmt: skip
    assert [(m["tag_id"], [o["id"] for o in m["object_ids"]]) for m in many] == [
        (tags["env", "prod"], [web1["moref"]])
    ]
    # without a session: 401
    in_category = rest.value("POST", f"{TAGGING}/tag/id:{cats['env']['id']}?~action=list-tags-for-category")
    assert in_category == [tags["env", "prod"]]
    on_objects = rest.value(
        "POST",
        f"{ASSOC}?~action=list-attached-tags-on-objects",
        {"object_ids": [{"type": "VirtualMachine", "id": web1["moref"]}]},
    )
    assert [(o["object_id"]["id"], sorted(o["tag_ids"])) for o in on_objects] == [
        (web1["moref"], sorted([tags["backup-policy", "gold"], tags["env", "prod"]]))
    ]
    # logged out, or never logged in: 401
    assert rest.call("DELETE", "/com/vmware/cis/session")[0] == 200
    assert rest.call("GET", f"{TAGGING}/tag")[0] == 401
    anonymous = object.__new__(RestClient)
    anonymous.base = rest.base
    assert anonymous.call("GET", f"{TAGGING}/tag")[0] == 401


def test_add_a_vm_while_the_lab_runs(sel_lab: Lab, si: Any) -> None:
    before = {vm.name for vm in all_of(si, vim.VirtualMachine)}
    entry = sel_lab.add_vm(
        {"name": "late 1", "folder": "prod/web", "host": "DC0_C0_H1", "resource_pool": "web",
         "datastore": "SSD_1",
         "tags": ["backup-policy:gold"], "cbt": True, "disks": [{"size": "320K", "seed": 9}, "64K"]}
    )  # fmt: skip
    assert entry["name"] == "late 1" and sel_lab.vm("late 1")["moref"] == entry["moref"]
    assert [d["capacity"] for d in entry["disks"]] == [320 * KiB, 64 * KiB]
    vms = by_name(all_of(si, vim.VirtualMachine))
    assert set(vms) - before == {"late 1"}
    vm = vms["late 1"]
    assert vm.parent.name == "web" and vm.runtime.host.name == "DC0_C0_H1" and vm.resourcePool.name == "web"
    assert vm in vm.runtime.host.vm and [d.name for d in vm.datastore] == ["SSD_1"]
    rest = RestClient(sel_lab)
    attached = rest.value("POST", f"{ASSOC}?~action=list-attached-tags",
                          {"object_id": {"type": "VirtualMachine", "id": entry["moref"]}})  # fmt: skip
    assert attached == [t["id"] for t in entry["tags"]]
    # the lab's machinery works on it: snapshots, deltas, guest writes, CBT, downloads
    key = entry["disks"][0]["key"]
    base = sel_lab.guest_read("late 1", key, 0, 320 * KiB)
    s1 = wait_task(vm.CreateSnapshot_Task("s1", "", False, False))
    sel_lab.guest_write("late 1", key, 70000, b"new data")
    s2 = wait_task(vm.CreateSnapshot_Task("s2", "", False, False))
    cid = disks_of(s1.config)[key].backing.changeId
    areas, _ = changed_areas(vm, s2, key, cid, 320 * KiB)
    assert areas == [(65536, 65536)]
    assert download(sel_lab, "late 1/late 1-flat.vmdk", datastore="SSD_1") == base
    wait_task(vm.RemoveAllSnapshots_Task())
    assert sel_lab.guest_read("late 1", key, 70000, 8) == b"new data"
    # refused specs name the field
    with pytest.raises(LabError, match="datastore: no datastore"):
        sel_lab.add_vm(VMSpec("x", (DiskSpec(64 * KiB),), datastore="nope"))
    with pytest.raises(LabError, match='a VM "late 1" exists already'):
        sel_lab.add_vm(VMSpec("late 1", (DiskSpec(64 * KiB),)))
    with pytest.raises(LabError, match="host: no host"):
        sel_lab.add_vm(VMSpec("y", (DiskSpec(64 * KiB),), host="DC9_H9"))
    with pytest.raises(LabError, match=r"tags\[0\]: no tag"):
        sel_lab.add_vm(VMSpec("z", (DiskSpec(64 * KiB),), tags=(TagRef("env", "dev"),)))
    assert not [p for p in sel_lab.datastore_dir.iterdir() if p.name in ("x", "y", "z")]  # nothing left


def backing_of(config: Any, key: int) -> Any:
    return disks_of(config)[key].backing


def test_independent_and_rdm_disks_in_snapshots(lab_factory: Callable[[LabSpec], Lab]) -> None:
    lab = lab_factory(
        LabSpec(vms=(VMSpec("mixed", (
            DiskSpec(192 * KiB, seed=1),
            DiskSpec(128 * KiB, seed=2, mode="independent_persistent"),
            DiskSpec(128 * KiB, seed=3, mode="independent_nonpersistent"),
            DiskSpec(128 * KiB, seed=4, kind="rdm", compatibility="physicalMode"),
            DiskSpec(128 * KiB, seed=5, kind="rdm"),
        ), cbt=True),))
    )  # fmt: skip
    entry = lab.vm("mixed")
    modes = [(d["kind"], d.get("compatibility"), d["mode"]) for d in entry["disks"]]
    assert modes == [
        ("flat", None, "persistent"),
        ("flat", None, "independent_persistent"),
        ("flat", None, "independent_nonpersistent"),
        ("rdm", "physicalMode", "independent_persistent"),
        ("rdm", "virtualMode", "persistent"),
    ]
    prdm, vrdm = entry["disks"][3], entry["disks"][4]
    assert (
        prdm["flat"] == "[LocalDS_0] mixed/mixed_3-rdmp.vmdk"
        and vrdm["flat"] == "[LocalDS_0] mixed/mixed_4-rdm.vmdk"
    )
    desc = (lab.datastore_dir / "mixed" / "mixed_3.vmdk").read_text()
    assert 'createType="vmfsPassthroughRawDeviceMap"' in desc and 'VMFSRDM "mixed_3-rdmp.vmdk"' in desc
    si = connect(lab)
    try:
        vm = si.content.searchIndex.FindByInventoryPath("DC0/vm/mixed")
        rdm = backing_of(vm.config, 2003)
        assert isinstance(rdm, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
        assert (rdm.compatibilityMode, rdm.diskMode, rdm.lunUuid) == (
            "physicalMode",
            "independent_persistent",
            prdm["lun_uuid"],
        )
        assert rdm.deviceName.startswith("/vmfs/devices/disks/vml.")
        # ReconfigVM_Task (here: CBT off and on) works on a VM with RDMs; their backings stay RDMs
        for on in (False, True):
            wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=on)))
        assert isinstance(
            backing_of(vm.config, 2004), vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo
        )
        snap = wait_task(vm.CreateSnapshot_Task("backup", "", False, False))
        cfg, cur = snap.config, vm.config
        # a dependent disk and a virtual RDM: frozen, the VM on a delta
        assert (
            backing_of(cfg, 2000).fileName == "[LocalDS_0] mixed/mixed.vmdk"
            and backing_of(cfg, 2000).changeId
        )
        assert backing_of(cur, 2000).fileName == "[LocalDS_0] mixed/mixed-000001.vmdk"
        v_snap, v_cur = backing_of(cfg, 2004), backing_of(cur, 2004)
        assert isinstance(v_cur, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
        assert v_snap.fileName == "[LocalDS_0] mixed/mixed_4.vmdk" and v_snap.changeId
        assert v_cur.fileName == "[LocalDS_0] mixed/mixed_4-000001.vmdk"
        assert v_cur.parent.fileName == v_snap.fileName and v_cur.parent.compatibilityMode == "virtualMode"
        # independent disks and the physical RDM: left out, as vSphere does
        for key in (2001, 2002, 2003):
            b = backing_of(cfg, key)
            assert b.fileName == backing_of(cur, key).fileName == entry["disks"][key - 2000]["vmdk"]
            assert b.parent is None and not b.changeId
            assert b.diskMode == entry["disks"][key - 2000]["mode"]
            with pytest.raises(vim.fault.FileFault):
                vm.QueryChangedDiskAreas(snap, key, 0, "*")
        assert not list((lab.datastore_dir / "mixed").glob("mixed_[123]-0*"))
        # writes to an independent disk go straight to its file; the dependent one's are held
        lab.guest_write("mixed", 2001, 0, b"independent")
        lab.guest_write("mixed", 2000, 0, b"dependent")
        assert download(lab, "mixed/mixed_1-flat.vmdk")[:11] == b"independent"
        assert download(lab, "mixed/mixed-flat.vmdk")[:9] != b"dependent"
        with pytest.raises(LabError, match="snapshots leave it out"):
            lab.disk_sha256("mixed", 2003, snapshot=snap._moId)
        wait_task(snap.RemoveSnapshot_Task(removeChildren=False))
        assert download(lab, "mixed/mixed-flat.vmdk")[:9] == b"dependent"
        assert isinstance(
            backing_of(vm.config, 2004), vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo
        )
        assert backing_of(vm.config, 2004).parent is None
    finally:
        disconnect(si)


def test_quiesce_fails_as_vsphere_says(lab_factory: Callable[[LabSpec], Lab]) -> None:
    lab = lab_factory(LabSpec(vms=(
        VMSpec("noquiesce", (DiskSpec(64 * KiB),), quiesce_fails=True),
        VMSpec("off", (DiskSpec(64 * KiB),), quiesce_fails=True, power_on=False),
        VMSpec("fine", (DiskSpec(64 * KiB),)),
    )))  # fmt: skip
    assert lab.vm("noquiesce")["quiesce_fails"] is True
    si = connect(lab)
    try:
        vm = si.content.searchIndex.FindByInventoryPath("DC0/vm/noquiesce")
        task = vm.CreateSnapshot_Task("q", "", False, True)
        with pytest.raises(vim.fault.ApplicationQuiesceFault) as err:
            wait_task(task)
        assert isinstance(err.value, vim.fault.SnapshotFault)
        assert task.info.state == "error" and task.info.entity == vm
        # pyVmomi reads the LocalizedMethodFault's localizedMessage into the fault's msg
        assert task.info.error.msg.startswith("An error occurred while quiescing the virtual machine.")
        assert err.value.faultMessage[0].message == "Failed to quiesce the virtual machine."
        assert vm.snapshot is None and lab.open_snapshots() == []
        snap = wait_task(vm.CreateSnapshot_Task("crash-consistent", "", False, False))
        assert snap is not None and vm.snapshot.rootSnapshotList[0].quiesced is False
        for name in ("off", "fine"):  # nothing to quiesce when off; Tools quiesce the others
            other = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
            assert wait_task(other.CreateSnapshot_Task("q", "", False, True)) is not None
    finally:
        disconnect(si)
