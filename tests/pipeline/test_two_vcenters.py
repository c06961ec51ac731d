"""One job across two vCenters: two lab simulators at once, both configured in settings.

Each lab has its own inventory, and both have a VM named `app01` with the same moref (vcsim numbers
VMs in the order it makes them, so morefs repeat across vCenters, as they do in production). A VM
is (vCenter, moref): the two `app01` get their own restore points, content and incremental chains,
and the runs, backups and alerts name the vCenter. With one vCenter down (answering 503, then not
answering at all) only its VMs fail, saying which vCenter; the other's backups complete; no snapshot
is left on either.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from shared.catalog import prune
from shared.db.models import Task
from shared.repo import LocalBackend, Repository
from shared.settings import Settings, VCenterSettings
from tests.gateway import conftest as gateway
from tests.gateway.conftest import Api, MakeApi
from tests.pipeline.conftest import MIB, Pipeline, now
from tests.plugins.webhook import WebhookReceiver

make_api = gateway.make_api  # the gateway's fixture: the API on this pipeline's database

SIZES = {("vc1", "app01"): 2 * MIB, ("vc1", "only1"): MIB, ("vc2", "app01"): 3 * MIB, ("vc2", "only2"): MIB}
ALL = sorted(SIZES)
VC1 = [k for k in ALL if k[0] == "vc1"]
VC2 = [k for k in ALL if k[0] == "vc2"]


def vcenter_setting(name: str, lab: Lab) -> dict[str, Any]:
    """One entry of VBM_VCENTERS."""
    return {"name": name, "url": lab.sdk_url, "username": lab.username, "password": lab.password,
            "verify_tls": False}  # fmt: skip


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

    async def start(self, job_id: str) -> str:
        status, body = await self.api.call("POST", f"/jobs/{job_id}/run")
        assert status == 202, body
        return str(body["run_id"])

    async def finish(self, run_id: str) -> dict[str, Any]:
        """The run, once it has ended, as GET /api/v1/runs/{id} shows it (with its tasks)."""
        await self.p.wait_run(run_id)
        status, detail = await self.api.call("GET", f"/runs/{run_id}")
        assert status == 200, detail
        return dict(detail)

    async def run(self, job_id: str) -> dict[str, Any]:
        return await self.finish(await self.start(job_id))

    async def only_vc2_failed(self, run_id: str, step: str) -> dict[str, Any]:
        """The run ended partial: vc1's VMs backed up, vc2's failed in `step`, each with an
        alert naming the VM and vCenter vc2."""
        run = await self.finish(run_id)
        states = {(x["vcenter"], x["vm_name"]): (x["state"], x["phase"]) for x in run["tasks"]}
        want = {k: ("succeeded", "done") if k[0] == "vc1" else ("failed", step) for k in ALL}
        assert states == want, self.p.dump(run_id)
        assert run["state"] == "partial" and run["error"] == "2 of 4 VMs did not back up", run
        failed = await self.alerts_of(run_id, 2)
        assert sorted(a["vm_name"] for a in failed) == ["app01", "only2"], failed
        for a in failed:
            assert a["message"].startswith(f"backup of {a['vm_name']} on vCenter vc2 failed in {step}: "), a
        return run

    async def alerts_of(self, run_id: str, count: int) -> list[dict[str, Any]]:
        """The run's alerts, once there are `count` (the notifier raises them as it hears of
        each failure, which may be after the run has ended)."""
        deadline = time.monotonic() + 15
        while True:
            status, body = await self.api.call("GET", "/alerts")
            assert status == 200, body
            alerts = [a for a in body["alerts"] if a["run_id"] == run_id]
            if len(alerts) >= count or time.monotonic() > deadline:
                return alerts
            await asyncio.sleep(0.2)

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
    p = pipeline_factory(
        lab_spec("vc1"),
        VBM_NOTIFICATIONS=json.dumps({"channels": hook}),
        # a transfer that stops moving (its vCenter went away) is failed after 5 s, not minutes
        VBM_PIPELINE__TRANSFER_STALL="5",
        VBM_MOVER__STREAMS="4",  # the four VMs at once: vc2's hung reads hold no vc1 VM back
    )
    vc1 = p.lab
    assert vc1.vm("app01")["moref"] == vc2.vm("app01")["moref"]  # the same moref on both
    configured = [vcenter_setting("vc1", vc1), vcenter_setting("vc2", vc2)]
    p.env["VBM_VCENTERS"] = json.dumps(configured)
    p.start()
    vcenters = tuple(VCenterSettings.model_validate(vc) for vc in configured)
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
    out, err, code = await p.cli("vm", "ls", "--vcenter", "vc2")  # vc2's VMs are protected by the job
    assert code == 0 and re.search(r"^vc2 +app01 .* yes$", out, re.M), (out, err)
    assert re.search(r"^vc2 +only2 .* yes$", out, re.M), out

    # --- 1. both up: four backups, the two app01 apart
    first = {k: t.content(k) for k in ALL}
    run1 = await t.run(job["id"])
    assert run1["state"] == "succeeded", p.dump(run1["id"])
    assert sorted((x["vcenter"], x["vm_name"]) for x in run1["tasks"]) == ALL
    points1 = {(x["vcenter"], x["vm_name"]): x["restore_point_id"] for x in run1["tasks"]}
    assert len(set(points1.values())) == 4
    repo = await Repository.open(LocalBackend(p.repo_dir))
    for key, rp_id in points1.items():
        assert await p.read_back(rp_id, 2000) == first[key], key
        manifest = await repo.load(rp_id)  # the restore point itself names its VM's vCenter
        assert (manifest.vcenter, manifest.vm_name, manifest.vm_moref) == (
            *key,
            t.labs[key[0]].vm(key[1])["moref"],
        )
    status, app01 = await api.call("GET", "/backups?vm=app01")
    assert status == 200 and sorted(b["vcenter"] for b in app01["backups"]) == ["vc1", "vc2"], app01
    assert {b["id"] for b in app01["backups"]} == {points1[("vc1", "app01")], points1[("vc2", "app01")]}
    status, on_vc2 = await api.call("GET", "/backups?vcenter=vc2")
    assert sorted(b["vm_name"] for b in on_vc2["backups"]) == ["app01", "only2"], on_vc2
    out, err, code = await p.cli("backups", "ls", "--vm", "app01", "--vcenter", "vc2")
    assert code == 0 and points1[("vc2", "app01")] in out and " vc2 " in out, (out, err)
    assert "1 of 1 restore points" in err, err
    t.assert_no_snapshot("vc1", "vc2")

    # --- 2. vc2 answers 503 from the start: only its VMs fail, saying which vCenter
    vc2.outage(600, mode="503")
    run2 = await t.only_vc2_failed(await t.start(job["id"]), "snapshot")
    for x in run2["tasks"]:
        if x["vcenter"] == "vc2":
            assert x["error"].startswith("connecting to vCenter vc2: "), x
    (message,) = [m.json() for m in webhook_receiver.wait_for(1)]
    assert "partly failed" in message["title"] and "(2 of 4 VMs ok)" in message["title"], message
    assert "- app01 on vc2: failed: connecting to vCenter vc2: " in message["text"], message
    assert "- app01 on vc1: incremental ok" in message["text"], message
    assert sorted((v["vcenter"], v["vm"]) for v in message["data"]["vms"]) == ALL, message
    # the CLI names each task's vCenter too: its progress lines and its log
    out, _, code = await p.cli("run", "watch", run2["id"])
    assert code == 1 and re.search(r"^app01 on vc2 +snapshot +failed .*vCenter vc2", out, re.M), out
    assert re.search(r"^app01 on vc1 +done +succeeded", out, re.M), out
    out, _, code = await p.cli("run", "log", run2["id"])
    assert code == 0 and re.search(r"\[vc2\] app01: .*vCenter vc2", out) and "[vc1] app01: " in out, out
    vc2.clear_faults()
    t.assert_no_snapshot("vc1", "vc2")
    assert p.open_ledger() == []

    # --- 3. vc2 goes away mid-run: its snapshots made, its reads hang, then its SOAP answers 503
    for name in ("app01", "only2"):  # something to read on each (the reads hang from the first byte)
        vc2.guest_write(name, 2000, 0, b"changed while vc1 was backed up")
    vc2.download_fault("stall", after_bytes=0)
    run_id = await t.start(job["id"])
    for name in ("app01", "only2"):
        await p.wait_task(run_id, in_transfer("vc2", name))
    assert len(vc2.open_snapshots()) == 2
    vc2.outage(600, mode="503")
    await t.only_vc2_failed(run_id, "transfer")
    assert len(vc2.open_snapshots()) == 2  # vbm cannot remove them while vc2 is down...
    assert {(e.vcenter, e.vm_name) for e in p.open_ledger()} == set(VC2)  # ...and keeps trying
    vc2.clear_faults()
    await eventually(lambda: p.open_ledger() == [], "vc2's snapshots removed once it is back")
    t.assert_no_snapshot("vc1", "vc2")
    points3 = {(rp.vcenter, rp.vm_name): rp.id for rp in p.restore_points(run_id)}
    assert sorted(points3) == VC1

    # --- 4. both up again: each app01 continues its own chain (a parent of its own vCenter)
    vc1.guest_write("app01", 2000, MIB, b"vc1 changed")
    vc2.guest_write("app01", 2000, 2 * MIB, b"vc2 changed")
    fourth = {k: t.content(k) for k in ALL}
    assert fourth[("vc2", "app01")] != first[("vc2", "app01")]
    assert fourth[("vc1", "app01")] != first[("vc1", "app01")]
    run4 = await t.run(job["id"])
    assert run4["state"] == "succeeded", p.dump(run4["id"])
    points4 = {(x["vcenter"], x["vm_name"]): x["restore_point_id"] for x in run4["tasks"]}
    for key, rp_id in points4.items():
        status, rp = await api.call("GET", f"/backups/{rp_id}")
        assert rp["vcenter"] == key[0] and rp["kind"] == "incremental", rp
        assert rp["parent"] == (points3 if key[0] == "vc1" else points1)[key], (key, rp)
        assert await p.read_back(rp_id, 2000) == fourth[key], key
    t.assert_no_snapshot("vc1", "vc2")
    # the CLI's edits keep each VM's vCenter (a moref alone would name vc1's VM of that moref)
    for args in (("disable",), ("edit", "--remove-vm", "only1", "--add-vm", "only1"), ("enable",)):
        out, err, code = await p.cli("job", args[0], "two-vcenters", *args[1:])
        assert code == 0, (args, out, err)
    status, edited = await api.call("GET", f"/jobs/{job['id']}")
    assert status == 200 and edited["enabled"], edited
    assert sorted((v.get("vcenter") or "vc1", v["name"], v["moref"]) for v in edited["vms"]) == refs, edited

    # --- 5. vc2 gone (its simulator killed): connection refused, only its VMs fail
    vc2.kill()
    run5 = await t.only_vc2_failed(await t.start(job["id"]), "snapshot")
    for x in run5["tasks"]:
        if x["vcenter"] == "vc2":
            assert (
                x["error"]
                == "connecting to vCenter vc2: vCenter unreachable ([Errno 111] Connection refused)"
            )
    t.assert_no_snapshot("vc1")
    assert p.open_ledger() == []
    # the VMs and a job's preview: vc1's listed, vc2 named as unreachable
    status, listed = await api.call("GET", "/vms")
    assert status == 200 and sorted((v["vcenter"], v["name"]) for v in listed["vms"]) == VC1, listed
    assert [u["vcenter"] for u in listed["unreachable"]] == ["vc2"], listed
    status, preview = await api.call("GET", f"/jobs/{job['id']}/preview")
    assert status == 200 and [u["vcenter"] for u in preview["unreachable"]] == ["vc2"], preview

    # retention (keep_last 1, applied after each backup) kept one point per VM: the newest of each
    # vCenter's app01 (grouped by moref alone, vc1's backups pruned vc2's app01)
    with p.sessions() as s:
        settings = Settings(vcenters=vcenters, data_dir=p.data)
        kept = {(r.vcenter, r.vm_name): r.id for r, d, _ in prune.preview(s, settings, now()) if d.keep}
    newest = {
        (x["vcenter"], x["vm_name"]): x["restore_point_id"] for x in run5["tasks"] if x["vcenter"] == "vc1"
    }
    assert kept == newest | {k: points4[k] for k in VC2}
    print(f"two vCenters: {time.monotonic() - started:.1f}s")


def in_transfer(vcenter: str, vm: str) -> Callable[[Task], bool]:
    return lambda task: (
        (task.vcenter, task.vm_name, task.phase, task.state) == (vcenter, vm, "transfer", "running")
    )


async def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not so after {timeout}s: {what}"
        await asyncio.sleep(0.2)
