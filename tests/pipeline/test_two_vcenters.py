"""One job across two vCenters: two lab simulators at once, both configured in settings.

Each lab has its own inventory, and both have a VM named `app01` with the same moref (vcsim numbers
VMs in the order it makes them, so morefs repeat across vCenters, as they do in production). A VM
is (vCenter, moref): the two `app01` get their own restore points, content and incremental chains,
and the runs, backups and alerts name the vCenter. With one vCenter down (answering 503, then not
answering at all) only its VMs fail, saying which vCenter; the other's backups complete; no snapshot
is left on either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from shared.catalog import prune
from shared.settings import Settings
from tests.gateway import conftest as gateway
from tests.gateway.conftest import Api, MakeApi, lab_vcenter
from tests.pipeline.conftest import MIB, Pipeline, now
from tests.plugins.webhook import WebhookReceiver

make_api = gateway.make_api  # the gateway's fixture: the API on this pipeline's database

SIZES = {("vc1", "app01"): 2 * MIB, ("vc1", "only1"): MIB, ("vc2", "app01"): 3 * MIB, ("vc2", "only2"): MIB}
ALL = sorted(SIZES)
VC1 = [k for k in ALL if k[0] == "vc1"]
VC2 = [k for k in ALL if k[0] == "vc2"]


def lab_spec(vcenter: str) -> LabSpec:
    """app01 first (the same moref on both labs), then the VM only this vCenter has."""
    seed = 100 if vcenter == "vc1" else 200
    vms = sorted((k[1] for k in SIZES if k[0] == vcenter), key=lambda n: n != "app01")
    return LabSpec(
        vms=tuple(
            VMSpec(name, (DiskSpec(SIZES[(vcenter, name)], seed=seed + i),), cbt=True)
            for i, name in enumerate(vms)
        )
    )


class TwoVCenters:
    def __init__(self, p: Pipeline, api: Api, labs: dict[str, Lab]) -> None:
        self.p, self.api, self.labs = p, api, labs

    def content(self, key: tuple[str, str]) -> bytes:
        vcenter, vm = key
        return self.labs[vcenter].guest_read(vm, 2000, 0, SIZES[key])

    async def run(self, job_id: str) -> dict[str, Any]:
        status, body = await self.api.call("POST", f"/jobs/{job_id}/run")
        assert status == 202, body
        run = await self.p.wait_run(body["run_id"])
        status, detail = await self.api.call("GET", f"/runs/{run.id}")
        assert status == 200, detail
        return dict(detail)

    def assert_no_snapshot(self, *vcenters: str) -> None:
        for name in vcenters:
            lab = self.labs[name]
            assert lab.open_snapshots() == [], (name, lab.open_snapshots())
            for vm in lab.inventory["vms"]:
                assert lab.snapshots(vm["name"]) == [], (name, vm["name"])


async def test_one_job_across_two_vcenters_and_one_down(
    pipeline_factory: Callable[..., Pipeline],
    lab_factory: Callable[[LabSpec], Lab],
    make_api: MakeApi,
    webhook_receiver: WebhookReceiver,
) -> None:
    started = time.monotonic()
    vc2 = lab_factory(lab_spec("vc2"))
    hook = [{"name": "hook", "type": "webhook", "url": webhook_receiver.url(), "on": ["warning", "failure"]}]
    p = pipeline_factory(lab_spec("vc1"), VBM_NOTIFICATIONS=json.dumps({"channels": hook}))
    vc1 = p.lab
    assert vc1.vm("app01")["moref"] == vc2.vm("app01")["moref"]  # the same moref on both
    vcenters = (lab_vcenter(vc1, "vc1"), lab_vcenter(vc2, "vc2"))
    p.env["VBM_VCENTERS"] = json.dumps(
        [vc.model_dump(mode="json") | {"password": vc1.password} for vc in vcenters]
    )
    p.start()
    api = await make_api(f"sqlite:///{p.data / 'vbm.db'}", vcenters=vcenters, repository=str(p.repo_dir))
    t = TwoVCenters(p, api, {"vc1": vc1, "vc2": vc2})

    # the VMs of both vCenters, each with its vCenter; a job takes VMs of both by name
    status, listed = await api.call("GET", "/vms")
    assert status == 200 and sorted((v["vcenter"], v["name"]) for v in listed["vms"]) == ALL, listed
    body = {
        "name": "two-vcenters",
        "vcenter": "vc1",
        "vms": [{"name": "app01"}, {"name": "only1"}, {"vcenter": "vc2", "name": "app01"},
                {"vcenter": "vc2", "name": "only2"}],
        "retention": {"keep_last": 1},
    }  # fmt: skip
    status, job = await api.call("POST", "/jobs", json=body)
    assert status == 201, job
    refs = sorted((v.get("vcenter") or job["vcenter"], v["name"], v["moref"]) for v in job["vms"])
    assert refs == [(vc, vm, t.labs[vc].vm(vm)["moref"]) for vc, vm in ALL], job["vms"]

    # --- both up: four backups, the two app01 apart
    first = {k: t.content(k) for k in ALL}
    run1 = await t.run(job["id"])
    assert run1["state"] == "succeeded", p.dump(run1["id"])
    assert sorted((x["vcenter"], x["vm_name"]) for x in run1["tasks"]) == ALL
    points1 = {(x["vcenter"], x["vm_name"]): x["restore_point_id"] for x in run1["tasks"]}
    assert len(set(points1.values())) == 4
    for key, rp_id in points1.items():
        assert await p.read_back(rp_id, 2000) == first[key], key
    status, app01 = await api.call("GET", "/backups?vm=app01")
    assert status == 200 and sorted(b["vcenter"] for b in app01["backups"]) == ["vc1", "vc2"], app01
    assert {b["id"] for b in app01["backups"]} == {points1[("vc1", "app01")], points1[("vc2", "app01")]}
    status, on_vc2 = await api.call("GET", "/backups?vcenter=vc2")
    assert sorted(b["vm_name"] for b in on_vc2["backups"]) == ["app01", "only2"], on_vc2
    out, err, code = await p.cli("backups", "ls", "--vm", "app01", "--vcenter", "vc2")
    assert code == 0 and points1[("vc2", "app01")] in out and " vc2 " in out, (out, err)
    assert "1 of 1 restore points" in err, err
    t.assert_no_snapshot("vc1", "vc2")

    # --- vc2 answers 503: only its VMs fail, saying which vCenter; vc1's complete
    vc1.guest_write("app01", 2000, MIB, b"vc1 changed")
    vc2.outage(600, mode="503")
    run2 = await t.run(job["id"])
    states = {(x["vcenter"], x["vm_name"]): x["state"] for x in run2["tasks"]}
    assert states == {k: "succeeded" if k[0] == "vc1" else "failed" for k in ALL}, p.dump(run2["id"])
    assert run2["state"] == "partial" and "2 of 4" in (run2["error"] or ""), run2
    for x in run2["tasks"]:
        if x["vcenter"] == "vc2":
            assert "vCenter vc2" in x["error"], x
    status, alerts = await api.call("GET", "/alerts")
    failed = [a for a in alerts["alerts"] if a["run_id"] == run2["id"]]
    assert sorted(a["vm_name"] for a in failed) == ["app01", "only2"], failed
    assert all(a["message"].startswith(f"backup of {a['vm_name']} on vCenter vc2 failed") for a in failed), (
        failed
    )
    (message,) = [m.json() for m in webhook_receiver.wait_for(1)]
    assert "partly failed" in message["title"] and "(2 of 4 VMs ok)" in message["title"], message
    assert "- app01 on vc2: failed: " in message["text"] and "- app01 on vc1: " in message["text"], message
    assert sorted((v["vcenter"], v["vm"]) for v in message["data"]["vms"]) == ALL, message
    vc2.clear_faults()
    t.assert_no_snapshot("vc1", "vc2")
    assert p.open_ledger() == []

    # --- both up again: each app01 continues its own chain (its parent is of its own vCenter)
    second = {k: t.content(k) for k in ALL}
    vc2.guest_write("app01", 2000, 2 * MIB, b"vc2 changed")
    third = {k: t.content(k) for k in ALL}
    assert third[("vc2", "app01")] != second[("vc2", "app01")]
    run3 = await t.run(job["id"])
    assert run3["state"] == "succeeded", p.dump(run3["id"])
    points2 = {
        (x["vcenter"], x["vm_name"]): x["restore_point_id"] for x in run2["tasks"] if x["restore_point_id"]
    }
    points3 = {(x["vcenter"], x["vm_name"]): x["restore_point_id"] for x in run3["tasks"]}
    for key, rp_id in points3.items():
        status, rp = await api.call("GET", f"/backups/{rp_id}")
        assert rp["vcenter"] == key[0] and rp["kind"] == "incremental", rp
        assert rp["parent"] == (points2 if key[0] == "vc1" else points1)[key], (key, rp)
        assert await p.read_back(rp_id, 2000) == third[key], key
    t.assert_no_snapshot("vc1", "vc2")

    # --- vc2 gone (its simulator killed): connection refused, only its VMs fail
    vc2.kill()
    run4 = await t.run(job["id"])
    by_vm = {(x["vcenter"], x["vm_name"]): x for x in run4["tasks"]}
    assert {k: x["state"] for k, x in by_vm.items()} == {
        k: "succeeded" if k[0] == "vc1" else "failed" for k in ALL
    }
    assert run4["state"] == "partial", run4
    for key in VC2:
        assert "vCenter vc2" in by_vm[key]["error"], by_vm[key]
    status, alerts = await api.call("GET", "/alerts")
    failed = [a for a in alerts["alerts"] if a["run_id"] == run4["id"]]
    assert len(failed) == 2 and all(" on vCenter vc2 failed" in a["message"] for a in failed), failed
    t.assert_no_snapshot("vc1")
    assert p.open_ledger() == []

    # retention (keep_last 1) keeps one point per VM: the newest of each vCenter's app01
    with p.sessions() as s:
        settings = Settings(vcenters=vcenters, data_dir=p.data)
        kept = {(r.vcenter, r.vm_name): r.id for r, d, _ in prune.preview(s, settings, now()) if d.keep}
    newest = {k: by_vm[k]["restore_point_id"] for k in VC1} | {k: points3[k] for k in VC2}
    assert kept == newest
    print(f"two vCenters: {time.monotonic() - started:.1f}s")
