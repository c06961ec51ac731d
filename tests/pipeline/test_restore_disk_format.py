"""A restore as a new VM in another disk format than the source's, on the lab: a thin source
(web) restored thick and a thick source (db) restored thin, both byte-identical, their disks'
thin flag as asked (vCenter reads it from the descriptor, as the lab's RegisterVM does) and the
datastore's blocks as the format says (thick: the whole capacity; thin: the data only). And a
restore to another vCenter than the VM's own (a second lab)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

from pydantic import SecretStr

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from shared.catalog.restores import RestoreRequest, request_restore
from shared.settings import VCenterSettings
from shared.vsphere import VCenter
from tests.pipeline.conftest import MIB, Pipeline, now
from tests.pipeline.test_restore import folder, restore, settings, vcenter, vm_names, wait_restore


async def test_thin_restored_thick_and_thick_restored_thin(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier")
    run = await p.run_job(p.create_job("formats", ["web", "db"]))
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    points = {rp.vm_name: rp for rp in p.restore_points(run)}
    content = {("web", 2000): p.guest_disk("web", 2000), ("db", 2000): p.guest_disk("db", 2000)}

    thick = await restore(
        p, restore_point_id=points["web"].id, name="web-thick", datastore="LocalDS_0", disk_format="thick"
    )
    thin = await restore(
        p, restore_point_id=points["db"].id, name="db-thin", datastore="LocalDS_0", disk_format="thin"
    )
    made = {}
    for restore_id in (thick, thin):
        done = await wait_restore(p, restore_id)
        assert done.state == "succeeded", (done.error, p.logs())
        made[done.target["name"]] = done
        assert done.target["disk_format"] in ("thick", "thin")

    web, db = folder(p, "web-thick"), folder(p, "db-thin")
    assert (web / "web-thick-flat.vmdk").read_bytes() == content[("web", 2000)]
    assert (db / "db-thin-flat.vmdk").read_bytes() == content[("db", 2000)]
    # the descriptors: thick without the thin line (the rest as backed up), thin with it
    for desc in (web / "web-thick.vmdk", web / "web-thick_1.vmdk"):
        text = desc.read_text()
        assert "thinProvisioned" not in text and 'createType="vmfs"' in text and "ddb.uuid" in text, text
    assert 'ddb.thinProvisioned = "1"' in (db / "db-thin.vmdk").read_text()
    # blocks: the thick copy holds every byte (zeros too), the thin one only the grains with data
    thick_flat = await asyncio.to_thread(os.stat, web / "web-thick-flat.vmdk")
    assert thick_flat.st_blocks * 512 >= thick_flat.st_size
    thin_flat = await asyncio.to_thread(os.stat, db / "db-thin-flat.vmdk")
    assert thin_flat.st_blocks * 512 < 0.9 * thin_flat.st_size, thin_flat  # the mixed layout's zeros left out
    assert "db-thin.vmdk written thin:" in p.procs["mover"].log_tail(80)
    # vCenter's view of the restored disks: the thin flag as asked
    vc = vcenter(p)
    try:
        assert [d.thin for d in vc.vm(made["web-thick"].vm_moref).disks] == [False, False]
        assert [d.thin for d in vc.vm(made["db-thin"].vm_moref).disks] == [True]
        assert [d.thin for d in vc.vm(p.lab.vm("db")["moref"]).disks] == [False]  # the sources as they were
        assert all(d.thin for d in vc.vm(p.lab.vm("web")["moref"]).disks)
    finally:
        vc.close()
    p.assert_clean()


async def test_restore_to_another_vcenter(
    pipeline_factory: Callable[..., Pipeline], lab_factory: Callable[[LabSpec], Lab]
) -> None:
    """A new VM on a second vCenter (another lab): placed by that vCenter's datacenter (the source
    VM's moref names nothing there, or another VM), its disks byte-identical, nothing on the first."""
    p = pipeline_factory()
    other = lab_factory(LabSpec(vms=(VMSpec("there", (DiskSpec(1 * MIB, seed=5),)),)))
    second = {"name": "lab2", "url": other.sdk_url, "username": other.username,
              "password": other.password, "verify_tls": False}  # fmt: skip
    p.env["VBM_VCENTERS"] = json.dumps([*json.loads(p.env["VBM_VCENTERS"]), second])
    p.start("snapshotter", "mover", "verifier")
    run = await p.run_job(p.create_job("away", ["web"]))
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (rp,) = p.restore_points(run)
    content = {k: p.guest_disk("web", k) for k in (2000, 2001)}
    config = settings(p)
    lab2 = VCenterSettings(name="lab2", url=other.sdk_url, username=other.username,
                           password=SecretStr(other.password), verify_tls=False)  # fmt: skip
    config = config.model_copy(update={"vcenters": (*config.vcenters, lab2)})
    body = RestoreRequest(
        restore_point_id=rp.id, name="web-away", datastore="LocalDS_0", vcenter="lab2", disk_format="thin"
    )
    with p.sessions.begin() as s:
        restore_id = request_restore(s, body, config, now()).id
    await p.relay.publish_pending()
    done = await wait_restore(p, restore_id)
    assert done.state == "succeeded", (done.error, p.logs())
    assert done.vcenter == "lab2" and done.target["vcenter"] == "lab2"
    away = other.datastore_dir / "web-away"
    assert (away / "web-away-flat.vmdk").read_bytes() == content[2000]
    assert (away / "web-away_1-flat.vmdk").read_bytes() == content[2001]
    assert not folder(p, "web-away").exists() and "web-away" not in vm_names(p)
    vc = VCenter(lab2)
    try:
        info = vc.vm(done.vm_moref or "")
        assert info.name == "web-away" and [d.thin for d in info.disks] == [True, True]
    finally:
        vc.close()
    p.assert_clean()
