"""The mover's handlers with fakes (vCenter, datastore HTTP, the bus's live side) and SQLite, writing
to a real local repository: a backup's end (recorded, dropped, failed, cancelled) and a restore's
end (one place: state, event, alert; what a failed attempt made removed). No NATS, no lab."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.mover import outcome
from services.mover.backup import on_snapshot_ready
from services.mover.deps import Deps
from services.mover.restore import handler
from services.mover.restore.common import Attempt, RestoreFailed
from shared.contracts import DiskRef, RestoreRequested, SnapshotReady
from shared.db.models import Restore, RestorePointRow, Run, Task
from shared.repo import LocalBackend, Repository
from shared.runtime.bus import Delivery, Permanent, Retryable
from shared.vsphere.datastore import DownloadError
from tests.unit.conftest import RUN, T0, TASK, World
from tests.unit.fakes import FakeVCenters
from tests.unit.mover_fakes import FakeBus, FakeDatastore, MoverVCenter

MiB = 1 << 20
KiB64 = 64 << 10  # the test repository's chunk size: a 4 MiB disk is 64 windows
SNAP = "snapshot-1"


def delivery(attempt: int = 1) -> Delivery:
    return Delivery(
        consumer="mover", subject="vbm.snapshot.ready", stream_seq=1, attempt=attempt, max_deliver=4
    )


def event(**values: Any) -> SnapshotReady:
    return SnapshotReady(
        **{
            "occurred_at": T0, "run_id": RUN, "task_id": TASK,
            "vcenter": "vc1", "datacenter": "dc1", "vm_moref": "vm-1", "vm_name": "vm1",
            "vmx_path": "[ds1] vm1/vm1.vmx", "snapshot_moref": SNAP, "snapshot_name": "vbm-run-1",
            "disks": (DiskRef(key=2000, capacity_bytes=4 * MiB, datastore_path="[ds1] vm1/vm1.vmdk",
                              change_id="cid-1"),),
            **values,
        }
    )  # fmt: skip


class Mover:
    """The mover's deps over the world: the fake vCenter pool (CBT as the test says), a fake
    datastore client, a fake bus, a local repository at `repo`."""

    def __init__(self, world: World, tmp_path: Path) -> None:
        self.world = world
        self.vc = world.vc = MoverVCenter("vc1")
        world.vcenters = FakeVCenters(self.vc)
        self.repo = tmp_path / "repo"
        self.bus = FakeBus()
        world.ctx.bus = self.bus
        self.http = FakeDatastore()
        self.http.disks["ds1/vm1/vm1-flat.vmdk"] = bytes(range(256)) * (4 * MiB // 256)
        self.http.files["ds1/vm1/vm1.vmx"] = b'displayName = "vm1"\n'
        self.deps = Deps(world.ctx, world.vcenters)
        self.deps.http["vc1"] = self.http

    def transferring(self, **task: Any) -> None:
        """A job writing to the local repository, its run, and its task in transfer (snapshot taken)."""
        self.world.backup("vm-1", job={"repository": str(self.repo)}, phase="transfer", snapshot_moref=SNAP,
                          **task)  # fmt: skip

    async def points(self) -> list[str]:
        return list(await (await Repository.open(LocalBackend(str(self.repo)))).restore_point_ids())

    def rows(self) -> list[RestorePointRow]:
        with self.world.sessions() as s:
            return list(s.scalars(select(RestorePointRow)))


@pytest.fixture
async def mover(world: World, tmp_path: Path) -> AsyncIterator[Mover]:
    m = Mover(world, tmp_path)
    await Repository.init(LocalBackend(str(m.repo)), chunk_size=KiB64)
    yield m
    await m.deps.close()


# backups


async def test_a_transfer_commits_records_its_restore_point_and_moves_the_task_to_verify(
    world: World, mover: Mover
) -> None:
    mover.transferring()

    assert await on_snapshot_ready(event(), delivery(), mover.deps) == []

    (rp_id,) = await mover.points()
    (row,) = mover.rows()
    assert (row.id, row.task_id, row.run_id, row.job_id) == (rp_id, TASK, RUN, "job-1")
    assert (row.kind, row.parent, row.verify_state, row.logical_bytes) == ("full", None, "pending", 4 * MiB)
    assert row.repository == str(mover.repo) and row.bytes_read > 0
    task = world.task()
    assert (task.phase, task.state, task.restore_point_id, task.kind) == ("verify", "running", rp_id, "full")
    assert task.bytes_done == task.bytes_total == 4 * MiB
    (done,) = world.staged("vbm.transfer.done")
    assert (done["restore_point_id"], done["task_id"], done["bytes_read"]) == (rp_id, TASK, row.bytes_read)
    assert world.staged("vbm.step.failed") == []
    assert world.relay.kicks >= 1
    assert ("ds1/vm1/vm1-flat.vmdk", 0) in mover.http.reads


async def test_the_live_progress_counts_each_disk_and_their_bytes_add_up_to_the_tasks(
    world: World, mover: Mover
) -> None:
    mover.transferring()
    mover.http.disks["ds1/vm1/vm1_1-flat.vmdk"] = bytes(2 * MiB)
    second = DiskRef(
        key=2001, capacity_bytes=2 * MiB, datastore_path="[ds1] vm1/vm1_1.vmdk", change_id="cid-2"
    )

    await on_snapshot_ready(event(disks=(event().disks[0], second)), delivery(), mover.deps)

    subject, last = mover.bus.live[-1]  # the last sample: the transfer's end
    assert subject == f"vbm.live.progress.{RUN}" and last.task_id == TASK
    assert [(d.key, d.label) for d in last.disks] == [(2000, "Disk 2000"), (2001, "Disk 2001")]
    assert all(d.bytes_done == d.bytes_total for d in last.disks)
    assert (
        sum(d.bytes_done for d in last.disks)
        == last.bytes_done
        == last.bytes_total
        == world.task().bytes_total
    )
    assert last.disks[0].bytes_total == 4 * MiB


async def test_the_next_backup_reads_only_what_cbt_says_changed_since_its_parent(
    world: World, mover: Mover
) -> None:
    mover.transferring()
    await on_snapshot_ready(event(), delivery(), mover.deps)
    (parent,) = mover.rows()
    world.clock.advance(hours=1)
    world.add_run("run-2")
    task_id = world.add_task("vm-1", run_id="run-2", phase="transfer", snapshot_moref="snapshot-2")
    mover.vc.changed[2000] = [(KiB64, 100)]  # one window changed
    mover.http.reads.clear()
    second = event(run_id="run-2", task_id=task_id, snapshot_moref="snapshot-2")
    second = second.model_copy(update={"disks": (second.disks[0].model_copy(update={"change_id": "cid-2"}),)})

    await on_snapshot_ready(second, delivery(), mover.deps)

    assert ("vm-1", "snapshot-2", 2000, "cid-1") in mover.vc.asked("changed_areas")  # since the parent
    assert [offset for _, offset in mover.http.reads] == [KiB64]
    row = next(r for r in mover.rows() if r.id != parent.id)
    assert (row.kind, row.parent, row.run_id) == ("incremental", parent.id, "run-2")
    assert world.task(task_id).kind == "incremental"


async def test_a_retry_records_what_an_earlier_attempt_committed_without_reading_again(
    world: World, mover: Mover
) -> None:
    mover.transferring()
    await on_snapshot_ready(event(), delivery(), mover.deps)
    (rp_id,) = await mover.points()
    with world.sessions.begin() as s:  # the catalog never heard of it (the mover died before)
        s.delete(s.get(RestorePointRow, rp_id))
        task = s.get(Task, TASK)
        assert task is not None
        task.phase, task.restore_point_id = "transfer", None
    mover.http.reads.clear()

    await on_snapshot_ready(event(attempt=2), delivery(2), mover.deps)

    assert mover.http.reads == []
    assert await mover.points() == [rp_id]
    assert [r.id for r in mover.rows()] == [rp_id]
    assert world.task().phase == "verify"


async def test_an_event_for_a_task_no_longer_in_transfer_is_dropped(world: World, mover: Mover) -> None:
    mover.transferring(state="failed", error="overdue")

    assert await on_snapshot_ready(event(), delivery(), mover.deps) == []

    assert mover.http.reads == [] and mover.rows() == []
    assert world.staged() == []
    assert world.task().state == "failed"


async def test_a_task_ended_by_the_watchdog_mid_transfer_drops_the_result(world: World, mover: Mover) -> None:
    mover.transferring()

    async def watchdog() -> None:
        with world.sessions.begin() as s:
            task = s.get(Task, TASK)
            assert task is not None
            task.state, task.error = "failed", "transfer stalled"

    mover.http.on_read = watchdog

    assert await on_snapshot_ready(event(), delivery(), mover.deps) == []

    assert await mover.points() == [] and mover.rows() == []
    assert world.staged() == []  # the watchdog staged its own StepFailed; the mover adds nothing
    task = world.task()
    assert (task.phase, task.state, task.error) == ("transfer", "failed", "transfer stalled")


async def test_a_read_that_fails_is_retried_then_given_up_with_its_reason(world: World, mover: Mover) -> None:
    mover.transferring()
    mover.http.fault = DownloadError("vm1-flat.vmdk [0, 4 MiB): HTTP 503", retryable=True)

    with pytest.raises(Retryable, match="HTTP 503"):
        await on_snapshot_ready(event(), delivery(1), mover.deps)
    with pytest.raises(Permanent, match=r"vm1-flat\.vmdk"):
        await on_snapshot_ready(event(), delivery(4), mover.deps)  # the last attempt

    mover.http.fault = DownloadError("vm1-flat.vmdk: HTTP 404", retryable=False)
    with pytest.raises(Permanent, match="HTTP 404"):
        await on_snapshot_ready(event(), delivery(1), mover.deps)
    assert await mover.points() == [] and mover.rows() == []
    assert world.staged("vbm.transfer.done") == []


async def test_a_failed_transfer_ends_the_task_saying_why(world: World, mover: Mover) -> None:
    mover.transferring()

    outcome.end(mover.deps, event(), "failed", "vm1-flat.vmdk: HTTP 404")

    task = world.task()
    assert (task.state, task.error) == ("failed", "vm1-flat.vmdk: HTTP 404")
    (failed,) = world.staged("vbm.step.failed")
    assert (failed["step"], failed["reason"], failed["snapshot_moref"]) == ("transfer", task.error, SNAP)
    assert world.relay.kicks == 1


async def test_a_cancelled_run_ends_the_task_cancelled_and_writes_nothing(world: World, mover: Mover) -> None:
    mover.transferring()
    with world.sessions.begin() as s:
        run = s.get(Run, RUN)
        assert run is not None
        run.cancel_requested = True

    assert await on_snapshot_ready(event(), delivery(), mover.deps) == []

    task = world.task()
    assert (task.state, task.error) == ("cancelled", "cancelled by request")
    (failed,) = world.staged("vbm.step.failed")
    assert failed["reason"] == "cancelled by request"
    assert await mover.points() == [] and mover.rows() == []
    assert mover.bus.subscribers == {}  # the cancel subscription is gone


async def test_a_cancel_heard_mid_transfer_stops_the_reads_and_ends_the_task_cancelled(
    world: World, mover: Mover
) -> None:
    mover.transferring()

    async def cancel() -> None:
        (on_cancel,) = mover.bus.subscribers.values()  # vbm.live.cancel.<run>
        await on_cancel(object())

    mover.http.on_read = cancel

    await on_snapshot_ready(event(), delivery(), mover.deps)

    assert list(mover.bus.subscribers) == []
    assert len(mover.http.reads) < 4 * MiB // KiB64  # stopped before the end of the disk
    task = world.task()
    assert (task.state, task.error) == ("cancelled", "cancelled by request")
    assert [f["reason"] for f in world.staged("vbm.step.failed")] == ["cancelled by request"]
    assert await mover.points() == [] and mover.rows() == []


# restores


def restore_world(world: World, **values: Any) -> MoverVCenter:
    vc = MoverVCenter("vc1")
    world.vc = vc
    world.vcenters = FakeVCenters(vc)
    now = world.clock()
    with world.sessions.begin() as s:
        s.add(
            Restore(
                **{
                    "id": "restore-1", "restore_point_id": "rp-1", "repository": "/repo", "vcenter": "vc1",
                    "mode": "new_vm", "target": {"vcenter": "vc1", "name": "web-copy", "datastore": "ds1"},
                    "state": "queued", "phase": "queued", "bytes_total": 8 * MiB, "created": {},
                    "created_at": now, "updated_at": now, **values,
                }
            )
        )  # fmt: skip
    return vc


def restore(world: World) -> Restore:
    with world.sessions() as s:
        row = s.get(Restore, "restore-1")
        assert row is not None
        return row


REQUEST = RestoreRequested(occurred_at=T0, restore_id="restore-1",
                           restore_point_id="rp-1")  # fmt: skip


async def test_a_restore_that_fails_midway_removes_what_it_made_and_ends_failed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    vc = restore_world(world)

    async def fails_after_registering(attempt: Attempt, *_: Any) -> str:
        attempt.created("datacenter", "dc1")
        attempt.created("folder", "[ds1] web-copy")
        attempt.created("vm", "vm-9")
        raise RestoreFailed("powering on failed: no host has room")

    monkeypatch.setattr(handler, "restore_new_vm", fails_after_registering)

    assert await handler.on_restore_requested(REQUEST, delivery(), Deps(world.ctx, world.vcenters)) == []

    assert vc.asked("destroy_vm") == [("vm-9",)]
    assert vc.asked("delete_path") == [("dc1", "[ds1] web-copy")]
    row = restore(world)
    assert (row.state, row.phase, row.created, row.generation) == ("failed", "done", {}, 1)
    assert row.error == "powering on failed: no host has room"
    (done,) = world.staged("vbm.restore.done")
    assert (done["state"], done["error"], done["vm_name"]) == ("failed", row.error, "web-copy")
    (alert,) = world.alerts()
    assert alert.kind == "restore_failed" and "no host has room" in alert.message


async def test_a_restore_that_succeeds_ends_once_with_its_vm_and_no_alert(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    vc = restore_world(world)

    async def succeeds(attempt: Attempt, *_: Any) -> str:
        attempt.created("vm", "vm-9")
        return "vm-9"

    monkeypatch.setattr(handler, "restore_new_vm", succeeds)
    deps = Deps(world.ctx, world.vcenters)

    await handler.on_restore_requested(REQUEST, delivery(), deps)
    await handler.on_restore_requested(REQUEST, delivery(2), deps)  # a redelivery: ended already

    row = restore(world)
    assert (row.state, row.vm_moref, row.bytes_done, row.created) == ("succeeded", "vm-9", 8 * MiB, {})
    assert [d["state"] for d in world.staged("vbm.restore.done")] == ["succeeded"]
    assert world.alerts() == [] and vc.asked("destroy_vm") == []


async def test_a_redelivered_restore_removes_the_leftovers_of_an_earlier_attempt_first(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_ago = world.clock() - timedelta(hours=1)  # the earlier attempt's mover went quiet
    vc = restore_world(world, state="running", phase="uploading", generation=1, updated_at=long_ago,
                       created={"datacenter": "dc1", "folder": "[ds1] web-copy"})  # fmt: skip
    seen: list[dict[str, Any]] = []

    async def succeeds(attempt: Attempt, *_: Any) -> str:
        seen.append(restore(world).created)
        return "vm-9"

    monkeypatch.setattr(handler, "restore_new_vm", succeeds)

    await handler.on_restore_requested(REQUEST, delivery(2), Deps(world.ctx, world.vcenters))

    assert vc.asked("delete_path") == [("dc1", "[ds1] web-copy")]
    assert seen == [{}]  # the new attempt started with nothing recorded
    row = restore(world)
    assert (row.state, row.generation, row.vm_moref) == ("succeeded", 2, "vm-9")


async def test_an_attempt_superseded_meanwhile_leaves_the_restore_to_its_new_owner(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    restore_world(world)

    async def overtaken(attempt: Attempt, *_: Any) -> str:
        with world.sessions.begin() as s:  # the watchdog ended it meanwhile
            row = s.get(Restore, "restore-1")
            assert row is not None
            row.state, row.error = "failed", "the mover went quiet"
        raise RestoreFailed("upload cut")

    monkeypatch.setattr(handler, "restore_new_vm", overtaken)

    await handler.on_restore_requested(REQUEST, delivery(), Deps(world.ctx, world.vcenters))

    row = restore(world)
    assert (row.state, row.error) == ("failed", "the mover went quiet")
    assert world.staged("vbm.restore.done") == [] and world.alerts() == []


async def test_a_restore_cancelled_before_it_started_ends_cancelled_without_alert(world: World) -> None:
    vc = restore_world(world, cancel_requested=True)

    await handler.on_restore_requested(REQUEST, delivery(), Deps(world.ctx, world.vcenters))

    row = restore(world)
    assert (row.state, row.error, row.generation) == ("cancelled", "cancelled before it started", 0)
    (done,) = world.staged("vbm.restore.done")
    assert done["state"] == "cancelled"
    assert world.alerts() == [] and vc.calls == []
