"""End to end on the lab: full, then incremental, byte-identical to the disks as frozen."""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.pipeline.conftest import MIB, Pipeline

CHUNK = 4 * MIB


async def test_full_then_incremental_batch_job(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory()
    p.start()
    job = p.create_job("batch", ["web", "db"])
    before = {(vm, k): p.guest_disk(vm, k) for vm, k in [("web", 2000), ("web", 2001), ("db", 2000)]}

    run1 = await p.run_job(job)
    assert (await p.wait_run(run1)).state == "succeeded", p.dump(run1)
    rps = {r.vm_name: r for r in p.restore_points(run1)}
    assert {r.kind for r in rps.values()} == {"full"}
    for (vm, key), content in before.items():
        assert await p.read_back(rps[vm].id, key) == content, (vm, key)
    p.assert_clean()

    # guest writes between backups: two windows of web's first disk, one of db's
    p.lab.guest_write("web", 2000, 5 * MIB + 100, os.urandom(3000))
    p.lab.guest_write("web", 2000, 9 * MIB, b"\x00" * 4096)  # identical bytes count as changed too
    p.lab.guest_write("db", 2000, 100, b"db changed")
    after = {(vm, k): p.guest_disk(vm, k) for vm, k in before}

    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    rps2 = {r.vm_name: r for r in p.restore_points(run2)}
    for (vm, key), content in after.items():
        assert await p.read_back(rps2[vm].id, key) == content, (vm, key)
    web = rps2["web"]
    assert web.kind == "incremental" and web.parent == rps["web"].id
    # only the touched windows were read: two of web's first disk, none of its second
    assert {d["key"]: d["stored_windows"] for d in web.disks} == {2000: 2, 2001: 0}
    assert web.bytes_read - 2 * CHUNK < 64 * 1024  # plus the small files (vmx, nvram, descriptors)
    # db had CBT off: the first run turned it on, so its second backup is incremental too
    assert rps2["db"].kind == "incremental"
    assert [d["stored_windows"] for d in rps2["db"].disks] == [1]
    # the first restore points are untouched
    for (vm, key), content in before.items():
        assert await p.read_back(rps[vm].id, key) == content
    # finished tasks show their whole plan done (an incremental's plan is what it reads), at the
    # transfer's average rate, and `vbm run watch` draws them full
    for run, planned in ((run1, None), (run2, {"web": 2 * CHUNK, "db": CHUNK})):
        for task in p.tasks(run):
            assert task.bytes_done == task.bytes_total > 0 and task.rate > 0, task
            if planned:
                assert task.bytes_total == planned[task.vm_name], task
        out, _, code = await p.cli("run", "watch", run)
        assert code == 0 and out.count("100%") == 2 and " 0%" not in out, out
    p.assert_clean()


async def test_user_snapshot_is_refused_with_advice(pipeline_factory: Callable[..., Pipeline]) -> None:
    from shared.settings import VCenterSettings
    from shared.vsphere import VCenter

    p = pipeline_factory()
    p.start()
    vc = VCenter(
        VCenterSettings(
            name="lab", url=p.lab.sdk_url, username=p.lab.username, password=p.lab.password, verify_tls=False
        )
    )
    user = vc.create_snapshot(p.lab.vm("db")["moref"], "before upgrade")
    job = p.create_job("refuse", ["db"])
    run = await p.wait_run(await p.run_job(job))
    assert run.state == "failed"
    (task,) = p.tasks(run.id)
    assert "not made by vbm ('before upgrade')" in (task.error or "")
    assert "Delete or consolidate" in (task.error or "")
    assert [s for s in p.lab.snapshots("db")] == ["before upgrade"]  # the user's is untouched
    vc.remove_snapshot(user.moref)
    vc.close()
    p.assert_clean()


async def test_zero_regions_take_no_space_and_are_not_read(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    from lab.launcher import DiskSpec, LabSpec, VMSpec

    spec = LabSpec(
        vms=(VMSpec("thin", (DiskSpec(8 * MIB, seed=1), DiskSpec(16 * MIB + 1024, layout="zero")), cbt=True),)
    )
    p = pipeline_factory(spec)
    p.start()
    run = await p.wait_run(await p.run_job(p.create_job("thin", ["thin"])))
    assert run.state == "succeeded", p.dump(run.id)
    (rp,) = p.restore_points(run.id)
    zero = next(d for d in rp.disks if d["key"] == 2001)
    assert zero["stored_windows"] == 0  # CBT reports nothing allocated: nothing is read
    from shared.repo import LocalBackend, Repository

    manifest = await (await Repository.open(LocalBackend(p.repo_dir))).load(rp.id)
    assert manifest.disk(2001).chunks == (5,)  # five zero windows, no chunk stored
    assert await p.read_back(rp.id, 2001) == bytes(16 * MIB + 1024)
    p.assert_clean()
