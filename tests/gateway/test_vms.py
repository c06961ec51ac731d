"""/api/v1/vms: the lab's inventory, one vCenter or all, and a vCenter that does not answer."""

from __future__ import annotations

from pathlib import Path

from lab.launcher import Lab
from services.gateway.answers.jobs import VMs
from shared.settings import VCenterSettings
from tests.gateway.conftest import MakeApi, lab_vcenter
from tests.plugins.procs import free_port

MiB = 1024 * 1024


async def test_vms_from_the_lab_and_an_unreachable_vcenter(
    make_api: MakeApi, lab: Lab, tmp_path: Path
) -> None:
    dead = VCenterSettings(
        name="dead", url=f"http://127.0.0.1:{free_port()}/sdk", username="u", password="p", verify_tls=False
    )
    api = await make_api(f"sqlite:///{tmp_path / 'v.db'}", (lab_vcenter(lab), dead))
    status, body = await api.call("GET", "/vms?vcenter=lab")
    assert status == 200, body
    assert body["vcenters"] == ["lab"] and body["total"] == 2
    VMs.model_validate(body)
    vm1, vm2 = body["vms"]
    assert (vm1["name"], vm1["moref"], vm1["vcenter"]) == ("vm1", lab.vm("vm1")["moref"], "lab")
    assert vm1["cbt"] is True and vm2["cbt"] is False and vm1["power_state"] == "poweredOn"
    assert vm1["uuid"] and vm1["snapshots"] == []
    assert [(d["key"], d["capacity"]) for d in vm1["disks"]] == [(2000, 8 * MiB), (2001, 5 * MiB + 3 * 1024)]
    assert vm1["disks"][0]["label"] == "Hard disk 1"

    status, listed = await api.call("GET", "/vms")  # every vCenter: one is down, the other's VMs show
    assert status == 200, listed
    assert [v["name"] for v in listed["vms"]] == ["vm1", "vm2"] and listed["vcenters"] == ["lab", "dead"]
    [down] = VMs.model_validate(listed).model_dump()["unreachable"]
    assert down["vcenter"] == "dead" and down["url"] == dead.url
    assert down["error"].startswith("vCenter dead (http://127.0.0.1:") and "cannot be asked" in down["error"]
    status, problem = await api.call("GET", "/vms?vcenter=dead")  # asked for by name: 502
    assert status == 502 and problem["title"] == "Bad Gateway" and "cannot be asked" in problem["detail"]
    status, problem = await api.call("GET", "/vms?vcenter=nope")
    assert status == 422 and problem["detail"].startswith("vcenter: unknown vCenter 'nope'")
    status, _ = await api.call("GET", "/vms", headers={"X-API-Key": "wrong"})
    assert status == 401
