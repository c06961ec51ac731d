"""The snapshotter's handlers and dispatch with a fake vCenter and SQLite: no NATS, no lab."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.snapshotter import snapshots
from services.snapshotter.dispatch import Dispatcher, Placed
from services.snapshotter.handlers import Deps, on_transfer_done
from services.snapshotter.step import snapshot_task
from shared.catalog import marker, runlog
from shared.contracts import TransferDone
from shared.db.models import Job, Run, ServiceInstance, Task
from shared.runtime.bus import Delivery
from shared.settings import LimitSettings
from shared.vsphere import TaskTimeout, VSphereError
from tests.unit.conftest import RUN, TASK, World
from tests.unit.fakes import Kicks, disk

SECRET = b"k" * 32
DELIVERY = Delivery(consumer="snapshotter-cleanup", subject="vbm.transfer.done", stream_seq=1, attempt=1,
                    max_deliver=5)  # fmt: skip


def deps(world: World) -> Deps:
    return Deps(world.ctx, world.vcenters, kick=Kicks(), secret=SECRET)


def log_of(world: World) -> str:
    with world.sessions() as s:
        return "\n".join(line["message"] for line in runlog.lines(s, RUN))


async def test_a_snapshot_is_taken_marked_and_handed_to_the_mover(world: World) -> None:
    world.backup("vm-1")
    d = deps(world)

    await snapshot_task(d, RUN, TASK)

    (snap,) = world.vc.vms["vm-1"].snapshots
    assert snap.name == "vbm-run-1"
    assert marker.is_vbms(SECRET, "vc1", "vm-1", snap.name, snap.description)
    task = world.task()
    assert (task.phase, task.state, task.snapshot_moref) == ("transfer", "running", snap.moref)
    assert task.bytes_total == 1 << 30
    (entry,) = world.ledger()
    assert (entry.snapshot_name, entry.state, entry.snapshot_moref) == ("vbm-run-1", "created", snap.moref)
    (ready,) = world.staged("vbm.snapshot.ready")
    assert ready["snapshot_moref"] == snap.moref and ready["snapshot_name"] == "vbm-run-1"
    assert [k["key"] for k in ready["disks"]] == [2000]
    assert world.relay.kicks >= 1
    assert f"snapshot vbm-run-1 created ({snap.moref})" in log_of(world)


async def test_the_ledger_holds_the_snapshot_before_vcenter_is_asked_for_it(world: World) -> None:
    world.backup("vm-1")
    seen: list[tuple[str, str]] = []
    world.vc.hooks["create_snapshot"] = lambda *_: seen.extend(
        (e.snapshot_name, e.state) for e in world.ledger()
    )

    await snapshot_task(deps(world), RUN, TASK)

    assert seen == [("vbm-run-1", "requested")]


async def test_a_failed_create_fails_the_task_with_vcenters_reason(world: World) -> None:
    world.backup("vm-1")
    world.vc.fail("create_snapshot", VSphereError("the host is in maintenance", fault="InvalidState",
                                                  retryable=False))  # fmt: skip
    d = deps(world)

    await snapshot_task(d, RUN, TASK)

    task = world.task()
    assert task.state == "failed" and "the host is in maintenance" in (task.error or "")
    (failed,) = world.staged("vbm.step.failed")
    assert failed["step"] == "snapshot" and "the host is in maintenance" in failed["reason"]
    assert world.run().state == "failed"
    assert d.kick.count >= 1  # a snapshot slot is free again


async def test_a_failed_create_with_tries_left_waits_for_the_next_try(world: World) -> None:
    world.backup("vm-1", job={"options": {"retries": 1}})
    world.vc.fail("create_snapshot", VSphereError("busy", fault="InvalidState", retryable=False))

    await snapshot_task(deps(world), RUN, TASK)

    task = world.task()
    assert (task.phase, task.state, task.tries) == ("queued", "queued", 2)
    assert task.wait_reason is not None and "busy" in task.wait_reason
    assert world.staged("vbm.step.failed") == []


async def test_a_create_that_timed_out_is_not_asked_again_one_vcenter_refused_is(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a timeout vCenter may still be making the snapshot: a second create could make two.
    After a create vCenter said failed, asking again is safe."""
    monkeypatch.setattr(snapshots, "RETRY_CALLS", (0.0, 0.0))
    world.backup("vm-1", "vm-2")
    world.vc.fail("create_snapshot", TaskTimeout("creating snapshot vbm-run-1", 900))
    await snapshot_task(deps(world), RUN, TASK)
    assert len(world.vc.asked("create_snapshot")) == 1
    assert world.task().state == "failed" and "did not finish" in (world.task().error or "")

    refused = VSphereError("host busy", fault="TaskInProgress", retryable=True, settled=True)
    world.vc.fail("create_snapshot", refused)
    await snapshot_task(deps(world), RUN, f"{RUN}.vc1:vm-2")
    assert [a[0] for a in world.vc.asked("create_snapshot")] == ["vm-1", "vm-2", "vm-2"]
    assert world.task(f"{RUN}.vc1:vm-2").phase == "transfer"


async def test_a_vm_with_a_snapshot_not_made_by_vbm_is_not_snapshotted(world: World) -> None:
    world.backup("vm-1")
    world.vc.create_snapshot("vm-1", "vbm-looks-like-ours", description="made by a person")

    await snapshot_task(deps(world), RUN, TASK)

    assert len(world.vc.asked("create_snapshot")) == 1  # the person's only
    task = world.task()
    assert task.state == "failed" and "1 snapshot(s) not made by vbm ('vbm-looks-like-ours')" in (
        task.error or ""
    )
    assert world.ledger() == []


async def test_quiesce_fallback_and_disks_left_out_are_warnings_named_in_the_event(world: World) -> None:
    excluded = {"exclude": {"disks": [{"vm": {"moref": "vm-1"}, "keys": [2002]}]}}
    world.backup("vm-1", job={"options": {"quiesce": True}, "selection": excluded})
    world.vc.vms["vm-1"].disks = [disk(2000), disk(2001, mode="independent_persistent"), disk(2002)]
    world.vc.fail(
        "create_snapshot", VSphereError("tools not running", fault="ToolsUnavailable", retryable=False)
    )

    await snapshot_task(deps(world), RUN, TASK)

    assert [a[2] for a in world.vc.asked("create_snapshot")] == [True, False]  # quiesced, then not
    (ready,) = world.staged("vbm.snapshot.ready")
    assert [k["key"] for k in ready["disks"]] == [2000]
    assert {k["key"]: k["reason"] for k in ready["skipped"]} == {
        2001: "an independent disk (independent_persistent): vSphere leaves it out of snapshots",
        2002: "excluded by the job",
    }
    warnings = world.task().warnings
    assert len(warnings) == 2  # the quiesce and the independent disk; an exclusion is no warning
    assert "quiescing failed (tools not running)" in warnings[0] and "disk 2001" in warnings[1]


async def test_cbt_is_turned_on_by_a_stun_cycle_recorded_in_the_ledger(world: World) -> None:
    world.backup("vm-1")
    world.vc.vms["vm-1"].cbt_enabled = False

    await snapshot_task(deps(world), RUN, TASK)

    assert world.vc.asked("set_cbt") == [("vm-1", True)]
    assert [a[1] for a in world.vc.asked("create_snapshot")] == ["vbm-run-1-cbt", "vbm-run-1"]
    assert world.vc.snapshot_names("vm-1") == ["vbm-run-1"]
    assert {(e.snapshot_name, e.state) for e in world.ledger()} == {("vbm-run-1-cbt", "removed"),
                                                                    ("vbm-run-1", "created")}  # fmt: skip
    (ready,) = world.staged("vbm.snapshot.ready")
    assert ready["disks"][0]["change_id"] is not None


async def test_a_step_taken_over_meanwhile_stops_before_it_changes_anything(world: World) -> None:
    world.backup("vm-1")

    def take_over(*_: Any) -> None:  # another snapshotter takes the step over while vCenter answers
        with world.sessions.begin() as s:
            task = s.get(Task, TASK)
            assert task is not None
            task.generation += 1

    world.vc.hooks["vm"] = take_over
    await snapshot_task(deps(world), RUN, TASK)

    assert world.vc.asked("create_snapshot") == [] and world.ledger() == []
    task = world.task()
    assert (task.phase, task.state, task.generation) == ("snapshot", "running", 2)  # the winner's


async def test_a_cancelled_run_ends_its_vm_without_a_snapshot(world: World) -> None:
    world.backup("vm-1")
    with world.sessions.begin() as s:
        run = s.get(Run, RUN)
        assert run is not None
        run.cancel_requested = True

    await snapshot_task(deps(world), RUN, TASK)

    assert world.vc.asked("create_snapshot") == []
    assert (world.task().state, world.task().error) == ("cancelled", "cancelled by request")
    assert world.run().state == "cancelled"


async def test_the_snapshot_goes_after_the_transfer_but_a_later_try_keeps_its_own(world: World) -> None:
    world.backup("vm-1")
    d = deps(world)
    await snapshot_task(d, RUN, TASK)
    with world.sessions.begin() as s:  # the first try failed in its transfer; the second is admitted
        task = s.get(Task, TASK)
        assert task is not None
        task.tries, task.phase, task.generation = 2, "snapshot", task.generation + 1
    await snapshot_task(d, RUN, TASK)
    assert world.vc.snapshot_names("vm-1") == ["vbm-run-1", "vbm-run-1-t2"]
    done = TransferDone(occurred_at=world.clock(), run_id=RUN, task_id=TASK, restore_point_id="rp-1",
                        bytes_read=1, bytes_stored=1)  # fmt: skip

    await on_transfer_done(done, DELIVERY, d)  # the first try's, late: the second try's snapshot stays
    assert world.vc.snapshot_names("vm-1") == ["vbm-run-1-t2"]

    with world.sessions.begin() as s:
        task = s.get(Task, TASK)
        assert task is not None
        task.phase = "verify"
    await on_transfer_done(done, DELIVERY, d)
    assert world.vc.snapshot_names("vm-1") == []
    assert {(e.snapshot_name, e.state) for e in world.ledger()} == {("vbm-run-1", "removed"),
                                                                    ("vbm-run-1-t2", "removed")}  # fmt: skip
    assert d.kick.count == 2  # a stream and a snapshot slot are free


async def test_dispatch_snapshots_just_in_time_within_the_limits(world: World) -> None:
    """Planning makes a task per VM; admission snapshots only what a free mover stream and the
    per-datastore snapshot limit allow; the others wait, saying for what."""
    world.context(limits=LimitSettings(snapshots_per_datastore=2))
    world.add_job(vms=[{"moref": f"vm-{i}"} for i in (1, 2, 3, 4)])
    world.add_run(state="queued", started_at=None)
    placed = [Placed("vc1", f"vm-{i}", f"vm{i}", host="host-1", datastores=("ds1",)) for i in (1, 2, 3, 4)]
    snapshotted: list[str] = []

    async def resolve(job: Job) -> tuple[list[Placed], list[str]]:
        return placed, []

    async def snapshot(run_id: str, task_id: str) -> None:
        snapshotted.append(task_id)

    dispatcher = Dispatcher(world.ctx, resolve=resolve, snapshot=snapshot)
    await dispatcher.once()
    await _settle(dispatcher)
    await dispatcher.once()  # planned: no mover runs, nothing is snapshotted
    await _settle(dispatcher)
    assert snapshotted == []
    assert world.task(f"{RUN}.vc1:vm-1").wait_reason == "waiting for a mover (none is running)"

    with world.sessions.begin() as s:
        mover = ServiceInstance(instance="mover-1", service="mover", host="h", pid=1, version="t",
                                started_at=world.clock(), seen_at=world.clock(), state="running")  # fmt: skip
        mover.capacity = 3
        s.add(mover)
    await dispatcher.once()
    await _settle(dispatcher)
    assert snapshotted == [f"{RUN}.vc1:vm-1", f"{RUN}.vc1:vm-2"]  # 2 snapshots per datastore, of 3 streams
    waiting = world.task(f"{RUN}.vc1:vm-3")
    assert (waiting.phase, waiting.wait_reason) == (
        "queued",
        "waiting for a snapshot slot on datastore ds1 (2 of 2)",
    )


async def _settle(dispatcher: Dispatcher) -> None:
    await asyncio.gather(*dispatcher.planning.values(), *dispatcher.working.values())
