"""Faults on the lab: every failure path ends with no snapshot left (or an alert naming the VM),
and no restore point that lies (visible ones read back byte-identical, no partial, no duplicate)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from lab.launcher import DiskSpec, LabSpec, VMSpec
from shared.db.models import Run
from tests.pipeline.conftest import MIB, Pipeline

FAST = {
    "VBM_PIPELINE__SNAPSHOT_TIMEOUT": "3",
    "VBM_PIPELINE__TRANSFER_STALL": "3",
}


def small_spec() -> LabSpec:
    return LabSpec(
        vms=(VMSpec("web", (DiskSpec(6 * MIB, seed=21), DiskSpec(MIB + 3072, seed=22)), cbt=True),),
        cbt_max_areas=4,
    )


def disks(p: Pipeline) -> dict[tuple[str, int], bytes]:
    """The guests' disks now, by (VM name, disk key), at their sizes in the lab's inventory."""
    return {
        (vm["name"], d["key"]): p.guest_disk(vm["name"], d["key"])
        for vm in p.lab.inventory["vms"]
        for d in vm["disks"]
    }


async def eventually(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not so after {timeout}s: {what}")
        await asyncio.sleep(0.2)


async def backup(p: Pipeline, job: str, state: str = "succeeded") -> Run:
    run = await p.wait_run(await p.run_job(job))
    assert run.state == state, f"{run.state}: {p.dump(run.id)}\n{p.logs()}"
    return run


async def read_all(p: Pipeline, rp_id: str) -> dict[tuple[str, int], bytes]:
    return {("web", k): await p.read_back(rp_id, k) for k in (2000, 2001)}


def transferring(task: Any) -> bool:
    return bool(task.phase == "transfer" and task.state == "running")


async def test_create_snapshot_fails_once_then_persistently(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(small_spec(), **FAST)
    p.start()
    job = p.create_job("create-fault", ["web"])
    content = disks(p)

    p.lab.fault("CreateSnapshot_Task", "task-error", count=1, fault="SystemError")
    run = await backup(p, job)
    (rp,) = p.restore_points(run.id)
    assert await read_all(p, rp.id) == content
    p.assert_clean()

    p.lab.fault("CreateSnapshot_Task", "task-error", fault="InvalidState")
    run = await backup(p, job, "failed")
    (task,) = p.tasks(run.id)
    assert task.state == "failed" and "InvalidState" in (task.error or ""), task.error
    assert p.restore_points(run.id) == []
    await eventually(lambda: not p.open_ledger(), what="the ledger entry of the failed create closes")
    p.lab.clear_faults()
    p.assert_clean()
    await p.check_repository(content)


async def test_create_snapshot_times_out_and_completes_late(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(small_spec(), **FAST)
    p.start()
    job = p.create_job("late-create", ["web"])
    content = disks(p)
    p.lab.fault("CreateSnapshot_Task", "delay", count=1, delay=5)
    run = await p.wait_run(await p.run_job(job), timeout=40)
    assert run.state in ("succeeded", "failed"), p.dump(run.id)
    if run.state == "failed":
        (task,) = p.tasks(run.id)
        assert "deadline" in (task.error or "") or "snapshot" in (task.error or ""), task.error
    # the late snapshot appears 5 s after the create: it must be found and removed too
    await asyncio.sleep(3)
    await eventually(
        lambda: not p.open_ledger() and not p.lab.snapshots("web"), what="the late snapshot removed"
    )
    p.assert_clean()
    await p.check_repository(content)


async def test_remove_snapshot_fails_then_alert_then_sweeper(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(small_spec(), VBM_PIPELINE__CLEANUP_ATTEMPTS="2", **FAST)
    p.start()
    job = p.create_job("remove-fault", ["web"])

    p.lab.fault("RemoveSnapshot_Task", "soap-fault", count=1)
    await backup(p, job)
    await eventually(lambda: not p.open_ledger(), what="the sweeper removed the snapshot after one failure")
    p.assert_clean()
    assert p.alerts() == []

    p.lab.fault("RemoveSnapshot_Task", "soap-fault")
    run = await backup(p, job)
    alert = await eventually(
        lambda: [a for a in p.alerts() if a.severity == "critical"], what="critical alert"
    )
    (a,) = alert
    assert a.vm_name == "web" and a.run_id == run.id
    assert "web" in a.message and f"vbm-{run.id}" in a.message, a.message
    (entry,) = p.open_ledger()
    assert entry.state == "stuck"
    assert p.lab.snapshots("web") == [f"vbm-{run.id}"]

    p.lab.clear_faults()
    await eventually(
        lambda: not p.open_ledger(), timeout=20, what="the stuck snapshot removed after the fault"
    )
    p.assert_clean()


async def test_download_cut_once_then_persistent_failure(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(small_spec(), **FAST)
    p.start()
    job = p.create_job("download", ["web"])
    content = disks(p)

    p.lab.download_fault("cut", path="web-flat.vmdk", after_bytes=MIB, count=1)
    run = await backup(p, job)
    (rp,) = p.restore_points(run.id)
    assert await read_all(p, rp.id) == content
    p.assert_clean()

    p.lab.guest_write("web", 2000, 100, b"changed")  # something to read in the incremental
    p.lab.download_fault("fail", path="-flat.vmdk", status=500)
    run = await backup(p, job, "failed")
    (task,) = p.tasks(run.id)
    assert task.state == "failed" and task.phase == "transfer", p.dump(run.id)
    assert p.restore_points(run.id) == []
    await eventually(lambda: not p.open_ledger(), what="snapshot removed after the failed transfer")
    p.assert_clean()
    assert [a for a in p.alerts() if a.run_id == run.id and a.kind == "backup-failed"]
    p.lab.clear_faults()
    await p.check_repository(content)


async def test_vcenter_outage_during_a_run(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(small_spec(), VBM_PIPELINE__SNAPSHOT_TIMEOUT="10", VBM_PIPELINE__TRANSFER_STALL="10")
    p.start()
    job = p.create_job("outage", ["web"])
    content = disks(p)
    p.lab.download_fault("stall", path="web-flat.vmdk", after_bytes=MIB, count=1)
    run_id = await p.run_job(job)
    await p.wait_task(run_id, transferring)
    p.lab.outage(4)
    p.lab.clear_faults()  # the download resumes; the SOAP outage goes on
    p.lab.outage(4)
    run = await p.wait_run(run_id, timeout=60)
    assert run.state in ("succeeded", "failed"), p.dump(run_id)
    await eventually(lambda: not p.open_ledger(), timeout=30, what="the ledger closes after the outage")
    p.assert_clean()
    await p.check_repository(content)


async def test_frozen_mover_is_fenced(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(small_spec(), **FAST)
    p.start()
    job = p.create_job("frozen", ["web"])
    content = disks(p)
    p.lab.download_fault("stall", path="web-flat.vmdk", after_bytes=MIB, count=1)
    run_id = await p.run_job(job)
    await p.wait_task(run_id, transferring)
    await asyncio.sleep(0.5)
    mover = p.freeze("mover")
    p.lab.clear_faults()
    run = await p.wait_run(run_id, timeout=30)
    assert run.state == "failed"
    (task,) = p.tasks(run_id)
    assert "deadline passed in phase transfer" in (task.error or ""), task.error
    await eventually(lambda: not p.open_ledger(), what="the watchdog's clean-up removed the snapshot")
    assert [a for a in p.alerts() if a.run_id == run_id and a.vm_name == "web"]
    p.assert_clean()

    mover.resume()
    await asyncio.sleep(4)  # the late mover wakes up, finishes its reads, must not commit
    assert p.restore_points(run_id) == []
    assert await p.check_repository(content) == []
    (task,) = p.tasks(run_id)
    assert task.state == "failed" and task.restore_point_id is None
    p.assert_clean()
    # and the mover still works
    run2 = await backup(p, job)
    (rp,) = p.restore_points(run2.id)
    assert await read_all(p, rp.id) == content
    p.assert_clean()


async def test_resized_disk_gives_a_full(pipeline_factory: Callable[..., Pipeline]) -> None:
    from pyVmomi import vim

    from tests.plugins.lab import connect, disconnect, disks_of, find_vm, wait_task

    p = pipeline_factory(small_spec(), **FAST)
    p.start()
    job = p.create_job("resize", ["web"])
    run1 = await backup(p, job)
    (rp1,) = p.restore_points(run1.id)

    si = connect(p.lab)
    try:
        vm = find_vm(si, "web")
        disk = disks_of(vm.config)[2001]
        new = disk.capacityInBytes + 2 * MIB
        disk.capacityInBytes, disk.capacityInKB = new, new // 1024
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    finally:
        disconnect(si)
    p.lab.guest_write("web", 2001, new - 4096, os.urandom(4096))
    content = {**disks(p), ("web", 2001): p.lab.guest_read("web", 2001, 0, new)}

    run2 = await backup(p, job)
    (rp2,) = p.restore_points(run2.id)
    assert await read_all(p, rp2.id) == content
    d2001 = next(d for d in rp2.disks if d["key"] == 2001)
    assert d2001["capacity"] == new
    repo_rp = await _load(p, rp2.id)
    assert repo_rp.disk(2001).built_on is None  # a full of the resized disk, not an incremental
    assert rp2.kind == "full" or repo_rp.disk(2000).built_on == rp1.id
    p.assert_clean()


async def _load(p: Pipeline, rp_id: str) -> Any:
    from shared.repo import LocalBackend, Repository

    repo = await Repository.open(LocalBackend(p.repo_dir))
    return await repo.load(rp_id)


async def test_writes_during_the_snapshot_go_to_the_next_backup(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(small_spec())
    p.start()
    job = p.create_job("writes", ["web"])
    frozen = disks(p)
    p.lab.download_fault("stall", path="web-flat.vmdk", after_bytes=MIB, count=1)
    run_id = await p.run_job(job)
    await p.wait_task(run_id, transferring)
    mover = p.freeze("mover")
    assert p.lab.snapshots("web") == [f"vbm-{run_id}"]
    p.lab.guest_write("web", 2000, 3 * MIB + 10, b"written during the backup" * 100)
    p.lab.guest_write("web", 2001, 0, os.urandom(8192))
    later = disks(p)
    assert later != frozen
    mover.resume()
    p.lab.clear_faults()
    run1 = await p.wait_run(run_id)
    assert run1.state == "succeeded", p.dump(run_id)
    (rp1,) = p.restore_points(run_id)
    assert await read_all(p, rp1.id) == frozen
    p.assert_clean()

    run2 = await backup(p, job)
    (rp2,) = p.restore_points(run2.id)
    assert rp2.kind == "incremental"
    assert await read_all(p, rp2.id) == later
    assert await read_all(p, rp1.id) == frozen
    p.assert_clean()


async def test_cancel_during_transfer(pipeline_factory: Callable[..., Pipeline]) -> None:
    from shared.contracts import cancel_subject

    p = pipeline_factory(small_spec())
    p.start()
    job = p.create_job("cancel", ["web"])
    content = disks(p)
    p.lab.download_fault("stall", path="web-flat.vmdk", after_bytes=MIB)
    run_id = await p.run_job(job)
    await p.wait_task(run_id, transferring)
    with p.sessions.begin() as s:
        row = s.get(Run, run_id)
        assert row is not None
        row.cancel_requested = True
    await p.bus.nc.publish(cancel_subject(run_id), b"{}")
    started = time.monotonic()
    run = await p.wait_run(run_id, timeout=15)
    assert run.state == "cancelled", p.dump(run_id)
    (task,) = p.tasks(run_id)
    assert task.state == "cancelled"
    await eventually(lambda: not p.lab.snapshots("web"), timeout=10, what="snapshot removed after cancel")
    assert time.monotonic() - started < 10
    assert p.restore_points(run_id) == []
    p.lab.clear_faults()
    await eventually(lambda: not p.open_ledger(), what="ledger closed")
    p.assert_clean()
    assert await p.check_repository(content) == []


async def test_cbt_stun_cycle_removal_fails(pipeline_factory: Callable[..., Pipeline]) -> None:
    """Turning CBT on takes a snapshot create+remove: a failed remove must not leave it behind,
    and no backup snapshot is taken on top of it (a chain): the VM is tried again once it is gone."""
    spec = LabSpec(vms=(VMSpec("old", (DiskSpec(2 * MIB, seed=31),), cbt=False),))
    p = pipeline_factory(spec, VBM_PIPELINE__RETRIES="1", VBM_PIPELINE__RETRY_WAIT="1", **FAST)
    p.start()
    job = p.create_job("stun", ["old"])
    content = disks(p)
    p.lab.fault("RemoveSnapshot_Task", "soap-fault", count=1)
    run = await p.wait_run(await p.run_job(job), timeout=40)
    assert run.state == "succeeded", p.dump(run.id)
    (task,) = p.tasks(run.id)
    log = [line["message"] for line in p.run_log(run.id)]
    assert task.tries == 2 and any("try 1 of 2 failed in snapshot" in line for line in log), log
    assert any("stun cycle could not be removed" in line for line in log), log
    await eventually(lambda: not p.open_ledger() and not p.lab.snapshots("old"), what="no snapshot left")
    p.assert_clean()
    await p.check_repository(content)
