"""A VM is (vCenter, moref): the same moref on two vCenters is two VMs, for the ledger's alerts,
for restore tests and for retention (the pipeline proof is tests/pipeline/test_two_vcenters.py)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from shared.catalog import ledger, prune
from shared.catalog.restores import start_restore_tests
from shared.db.models import Job, Restore, RestorePointRow, Run
from shared.pipeline.cleanup import remove_one
from shared.vsphere import VSphereError
from tests.unit.conftest import RUN, T0, World
from tests.unit.fakes import FakeVCenter, FakeVCenters


def point(rp_id: str, vcenter: str, minutes: int, job_id: str = "job-1") -> RestorePointRow:
    at = T0 + timedelta(minutes=minutes)
    return RestorePointRow(
        id=rp_id, task_id=f"{RUN}.{vcenter}:vm-1", run_id=RUN, job_id=job_id, vcenter=vcenter,
        vm_moref="vm-1", vm_name="app01", repository="/repo", kind="full", parent=None, disks=[],
        logical_bytes=1, bytes_read=1, bytes_stored=1, started_at=at, finished_at=at, verify_state="ok",
    )  # fmt: skip


async def test_a_snapshot_stuck_on_each_vcenter_raises_an_alert_each(world: World) -> None:
    """Both app01 (vm-1 on vc1 and on vc2) carry the run's snapshot under the same name: one
    stuck removal must not hide the other's alert."""
    ctx = world.context(pipeline={"cleanup_attempts": 1})
    vc2 = FakeVCenter("vc2")
    name = ledger.snapshot_name(RUN)
    for vc in (world.vc, vc2):
        vc.add_vm("vm-1", "app01")
        snap = vc.create_snapshot("vm-1", name, description="vbm")
        vc.fail(
            "remove_snapshot", VSphereError("host not responding", fault="HostCommunication", retryable=True)
        )
        with world.sessions.begin() as s:
            entry = ledger.record_intent(
                s, name=name, vcenter=vc.name, vm_moref="vm-1", vm_name="app01", run_id=RUN,
                task_id=f"{RUN}.{vc.name}:vm-1", now=world.clock(),
            )  # fmt: skip
            entry.state, entry.snapshot_moref = "created", snap.moref

    vcenters = FakeVCenters(world.vc, vc2)
    assert not await remove_one(ctx, vcenters, name, "vc1", "vm-1")  # type: ignore[arg-type]
    assert not await remove_one(ctx, vcenters, name, "vc2", "vm-1")  # type: ignore[arg-type]

    alerts = sorted(a.message for a in world.alerts() if a.kind == "snapshot-left-behind")
    assert len(alerts) == 2, alerts
    assert "(vm-1) on vCenter vc1 after 1 attempts" in alerts[0]
    assert "(vm-1) on vCenter vc2 after 1 attempts" in alerts[1]


def test_a_restore_test_takes_the_point_of_its_vms_own_vcenter(world: World) -> None:
    """The job tests app01 of vc2; vc1's app01 (the same moref) has a newer point: not that one."""
    test = {"restore_test": {"datastore": "ds1", "network": "isolated"}}
    world.add_job("job-t", vms=[{"vcenter": "vc2", "moref": "vm-1", "name": "app01"}], options=test)
    world.add_job("job-n", name="by-name", vms=[{"name": "app01"}], vcenter="vc2", options=test)
    world.add_run("run-t", job_id="job-t", state="queued")
    world.add_run("run-n", job_id="job-n", state="queued")
    with world.sessions.begin() as s:
        s.add_all([point("rp-vc2", "vc2", 1), point("rp-vc1", "vc1", 2)])
    with world.sessions.begin() as s:
        for run_id in ("run-t", "run-n"):
            run = s.get(Run, run_id)
            assert run is not None
            job = s.get(Job, run.job_id)
            assert job is not None
            assert len(start_restore_tests(s, job, run, world.clock())) == 1
    with world.sessions() as s:
        chosen = [
            (r.run_id, r.restore_point_id, r.vcenter)
            for r in s.scalars(select(Restore).order_by(Restore.run_id))
        ]
    assert chosen == [("run-n", "rp-vc2", "vc2"), ("run-t", "rp-vc2", "vc2")]


def test_retention_keeps_the_points_of_each_vcenters_vm(world: World) -> None:
    """keep_last 1 over one job's app01 of vc1 and app01 of vc2 (the same moref): one each."""
    world.add_job(retention={"keep_last": 1})
    with world.sessions.begin() as s:
        s.add_all([point("rp-a", "vc1", 1), point("rp-b", "vc2", 2), point("rp-c", "vc1", 3)])
    with world.sessions() as s:
        decided = {r.id: d.keep for r, d, _ in prune.preview(s, world.ctx.settings, T0 + timedelta(hours=1))}
    assert decided == {"rp-a": False, "rp-b": True, "rp-c": True}
