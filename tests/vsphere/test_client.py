"""The vSphere adapter against the lab, over the wire."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from shared.settings import VCenterSettings
from shared.vsphere import NotFound, TaskTimeout, VCenter, VSphereError

MIB = 1024 * 1024


def settings(lab: Lab, password: str | None = None) -> VCenterSettings:
    return VCenterSettings(
        name="lab",
        url=lab.sdk_url,
        username=lab.username,
        password=password or lab.password,
        verify_tls=False,
    )


@pytest.fixture
def lab3(lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    spec = LabSpec(
        vms=(
            VMSpec("web", (DiskSpec(8 * MIB, seed=1), DiskSpec(5 * MIB + 3072, seed=2)), cbt=True),
            VMSpec("db", (DiskSpec(2 * MIB, seed=3),), cbt=False),
        ),
        cbt_max_areas=2,
    )
    return lab_factory(spec)  # type: ignore[no-any-return]


@pytest.fixture
def vc(lab3: Lab) -> Iterator[VCenter]:
    v = VCenter(settings(lab3), timeout=20)
    yield v
    v.close()


def test_inventory(vc: VCenter, lab3: Lab) -> None:
    vms = {v.name: v for v in vc.list_vms()}
    assert set(vms) == {"web", "db"}
    web = vms["web"]
    assert web.moref == lab3.vm("web")["moref"] and web.cbt_enabled and not vms["db"].cbt_enabled
    assert [(d.key, d.capacity) for d in web.disks] == [(2000, 8 * MIB), (2001, 5 * MIB + 3072)]
    assert web.datacenter == "DC0" and web.datastores == ("LocalDS_0",)
    assert web.disks[0].flat_path == "web/web-flat.vmdk"
    assert vc.find_vm("db").moref == vms["db"].moref
    with pytest.raises(NotFound, match="nope"):
        vc.find_vm("nope")
    with pytest.raises(NotFound):
        vc.vm("vm-99999")


def test_snapshot_cycle_with_cbt_paging(vc: VCenter, lab3: Lab) -> None:
    web = vc.find_vm("web")
    snap = vc.create_snapshot(web.moref, "vbm-run-1")
    assert [s.name for s in vc.snapshots(web.moref)] == ["vbm-run-1"]
    disks = vc.snapshot_disks(snap.moref)
    assert disks[0].file.endswith("web.vmdk") and disks[0].change_id
    everything = vc.changed_areas(web.moref, snap.moref, 2000, disks[0].capacity, "*")
    assert len(everything) > 2  # more than one page of at most 2 areas each
    lab3.guest_write("web", 2000, 3 * MIB + 10, b"x" * 100)
    snap2 = vc.create_snapshot(web.moref, "vbm-run-2")
    changed = vc.changed_areas(web.moref, snap2.moref, 2000, disks[0].capacity, disks[0].change_id or "")
    assert changed == [(3 * MIB, 64 * 1024)]
    vc.remove_snapshot(snap.moref)
    vc.remove_snapshot(snap2.moref)
    vc.remove_snapshot(snap2.moref)  # already gone: success
    assert vc.snapshots(web.moref) == []


def test_cbt_toggle_and_stale_change_id(vc: VCenter) -> None:
    db = vc.find_vm("db")
    vc.set_cbt(db.moref, True)
    assert vc.vm(db.moref).cbt_enabled
    snap = vc.create_snapshot(db.moref, "s1")
    old = vc.snapshot_disks(snap.moref)[0]
    vc.remove_snapshot(snap.moref)
    vc.set_cbt(db.moref, False)
    vc.set_cbt(db.moref, True)
    snap = vc.create_snapshot(db.moref, "s2")
    with pytest.raises(VSphereError) as exc:
        vc.changed_areas(db.moref, snap.moref, 2000, old.capacity, old.change_id or "")
    assert exc.value.fault == "FileFault" and not exc.value.retryable
    vc.remove_snapshot(snap.moref)


def test_faults_are_translated(vc: VCenter, lab3: Lab) -> None:
    web = vc.find_vm("web")
    lab3.fault("CreateSnapshot_Task", "task-error", count=1, fault="TaskInProgress")
    with pytest.raises(VSphereError) as exc:
        vc.create_snapshot(web.moref, "x")
    assert exc.value.fault == "TaskInProgress" and exc.value.retryable
    lab3.fault("CreateSnapshot_Task", "delay", count=1, delay=3)
    with pytest.raises(TaskTimeout, match="may still complete"):
        vc.create_snapshot(web.moref, "late", timeout=0.5)
    lab3.clear_faults()
    # the late snapshot exists after all: callers find it by name and remove it
    late = [s for s in vc.snapshots(web.moref) if s.name == "late"]
    assert late
    vc.remove_snapshot(late[0].moref)


def test_unreachable_and_bad_login(lab3: Lab) -> None:
    bad = VCenter(settings(lab3, password="wrong"))
    with pytest.raises(VSphereError) as exc:
        bad.list_vms()
    assert exc.value.fault == "InvalidLogin" and "check the username and password" in str(exc.value)
    bad.close()
    lab3.outage(2)
    vc = VCenter(settings(lab3), timeout=5)
    with pytest.raises(VSphereError) as exc2:
        vc.list_vms()
    assert exc2.value.retryable
    vc.close()
