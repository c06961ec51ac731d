"""Which VMs a job holds, resolved at every run; disks left out and named; outcomes with warnings.

A job that selects by folder and by tag picks up VMs created after it was saved; an excluded disk
is never read and the restore point names it; an independent disk is skipped with a warning;
a quiesce that falls back to crash-consistent makes the VM and the run end `warning`, which a
channel listening for warnings hears of.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from lab.launcher import DiskSpec, LabSpec, TagCategorySpec, TagRef, VMSpec
from shared.repo import LocalBackend, Repository
from shared.vsphere import VCenter
from shared.vsphere.inventory import read_inventory
from shared.vsphere.selection import Chosen, of_job, resolve
from shared.vsphere.tags import attached_tags
from tests.pipeline.conftest import MIB, Pipeline
from tests.plugins.webhook import WebhookReceiver

GOLD = TagRef("Backup", "Gold")


def spec() -> LabSpec:
    return LabSpec(
        vms=(
            VMSpec("web-1", (DiskSpec(2 * MIB, seed=1),), cbt=True, folder="prod/web"),
            VMSpec(
                "db-1",
                (
                    DiskSpec(2 * MIB, seed=2),
                    DiskSpec(3 * MIB, seed=3),
                    DiskSpec(MIB, seed=4, mode="independent_persistent"),
                ),
                cbt=True,
                folder="prod/db",
                quiesce_fails=True,
            ),
            VMSpec("other", (DiskSpec(MIB, seed=5),), folder="test"),
        ),
        tag_categories=(TagCategorySpec("Backup", ("Gold", "Silver")),),
    )


async def test_selectors_pick_up_new_vms_exclusions_hold_and_warnings_are_told(
    pipeline_factory: Callable[..., Pipeline], webhook_receiver: WebhookReceiver
) -> None:
    hook = [{"name": "hook", "type": "webhook", "url": webhook_receiver.url(), "on": ["warning"]}]
    p = pipeline_factory(spec(), VBM_NOTIFICATIONS=json.dumps({"channels": hook}))
    p.start()
    db = p.lab.vm("db-1")
    job = p.create_job(
        "selected",
        ["db-1"],
        select=[{"folder": "prod/web"}, {"tag": "Backup/Gold"}],
        exclude={"disks": [{"vm": {"name": "db-1"}, "keys": [2001]}]},
        options={"quiesce": True},
    )
    # after the job was saved: a VM in the folder, and one elsewhere with the tag
    p.lab.add_vm(VMSpec("web-2", (DiskSpec(2 * MIB, seed=6),), cbt=True, folder="prod/web/new"))
    p.lab.add_vm(VMSpec("cache-1", (DiskSpec(MIB, seed=7),), cbt=True, folder="test", tags=(GOLD,)))
    seen = p.lab.requests()
    since = seen[-1]["seq"] if seen else 0

    run = await p.wait_run(await p.run_job(job), timeout=90)
    tasks = {t.vm_name: t for t in p.tasks(run.id)}
    assert sorted(tasks) == ["cache-1", "db-1", "web-1", "web-2"], p.dump(run.id)  # not "other"
    assert run.state == "warning", p.dump(run.id)
    assert all(t.state == "succeeded" for t in tasks.values()), p.dump(run.id)
    warned = tasks["db-1"].warnings
    assert any(w.startswith("quiescing failed") and "crash-consistent" in w for w in warned), warned
    assert any("disk 2002" in w and "independent" in w for w in warned), warned
    assert not [t.warnings for name, t in tasks.items() if name != "db-1" and t.warnings]

    # the excluded disk was never read; the restore point names what it left out, and why
    read = {r["path"] for r in p.lab.requests(since=since) if r["method"] == "GET"}
    assert not [path for path in read if "db-1_1" in path], read
    (point,) = [rp for rp in p.restore_points(run.id) if rp.vm_name == "db-1"]
    repo = await Repository.open(LocalBackend(p.repo_dir))
    manifest = await repo.load(point.id)
    assert [d.key for d in manifest.disks] == [2000]
    assert [(s.key, s.reason) for s in manifest.skipped] == [
        (2001, "excluded by the job"),
        (2002, "an independent disk (independent_persistent): vSphere leaves it out of snapshots"),
    ]
    assert await p.read_back(point.id, 2000) == p.guest_disk("db-1", 2000)

    (message,) = [m.json() for m in webhook_receiver.wait_for(1)]
    assert message["title"].startswith("[vbm] Backup succeeded with warnings: selected")
    assert "quiescing failed" in message["text"]
    p.assert_clean()
    assert db["moref"] == tasks["db-1"].vm_moref


async def test_resolution_against_the_lab_inventory(pipeline_factory: Callable[..., Pipeline]) -> None:
    """The selection model against a real inventory: folders include subfolders, tags match by
    Category/Tag or by the tag alone, names by pattern, templates never; exclusions win."""
    p = pipeline_factory(spec())
    p.lab.add_vm(VMSpec("web-3", (DiskSpec(MIB, seed=8),), folder="prod/web", tags=(GOLD,)))
    job_id = p.create_job(
        "model",
        ["other"],
        select=[{"folder": "prod"}, {"tag": "Gold"}, {"name": "oth*"}],
        exclude={"vms": [{"name": "web-3"}]},
    )
    from shared.db.models import Job

    with p.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        chosen_spec = of_job(job)
    vc = VCenter(json_vcenter(p))
    try:
        inventory = read_inventory(vc)
        tags = attached_tags(vc)
    finally:
        vc.close()
    assert tags == {p.lab.vm("web-3")["moref"]: ("Backup/Gold",)}
    by_name = {vm.name: vm for vm in inventory}
    assert by_name["web-1"].folder == "prod/web" and by_name["db-1"].folder == "prod/db"
    assert by_name["db-1"].host == "DC0_H0" and by_name["db-1"].datastores == ("LocalDS_0",)
    chosen: list[Chosen] = resolve(chosen_spec, {"lab": inventory})
    assert [(c.name, c.why) for c in chosen] == [
        ("db-1", "folder prod"),
        ("other", "listed"),
        ("web-1", "folder prod"),
    ]


def json_vcenter(p: Pipeline) -> object:
    from shared.settings import VCenterSettings

    (vc,) = json.loads(p.env["VBM_VCENTERS"])
    return VCenterSettings.model_validate(vc)
