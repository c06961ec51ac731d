"""The notifier's watchdog, failure handling and channel routing with fakes and SQLite: no NATS."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.notifier.handlers import Deps, on_bus_rejected, on_step_failed, overdue_tasks, sweep
from services.notifier.notify import on_alert_raised, on_run_finished
from shared.catalog import ledger, marker
from shared.contracts import AlertRaised, BusRejected, RunFinished, StepFailed
from shared.db.audit import AuditRecord
from shared.db.models import Task
from shared.notify import channels, messages
from shared.runtime.bus import Delivery, Retryable
from shared.settings import ChannelSettings, NotificationSettings
from shared.vsphere import VSphereError
from tests.unit.conftest import RUN, TASK, World
from tests.unit.fakes import FakeSender

SECRET = b"k" * 32


def deps(world: World) -> Deps:
    return Deps(world.ctx, world.vcenters)


def delivery(attempt: int = 1, max_deliver: int = 3) -> Delivery:
    return Delivery(
        consumer="notifier", subject="vbm.x", stream_seq=7, attempt=attempt, max_deliver=max_deliver
    )


def transferring(world: World, tries: int = 1) -> str:
    """The task in its transfer, reading its snapshot (made, marked, in the ledger); its moref."""
    name = ledger.snapshot_name(RUN, tries)
    snap = world.vc.create_snapshot(
        "vm-1", name, description=marker.description(SECRET, "vc1", "vm-1", name, RUN)
    )
    with world.sessions.begin() as s:
        entry = ledger.record_intent(s, name=name, vcenter="vc1", vm_moref="vm-1", vm_name="vm1", run_id=RUN,
                                     task_id=TASK, now=world.clock())  # fmt: skip
        entry.state, entry.snapshot_moref = "created", snap.moref
        task = s.get(Task, TASK)
        assert task is not None
        task.phase, task.tries, task.snapshot_moref = "transfer", tries, snap.moref
    return snap.moref


def test_the_watchdog_fails_a_task_past_its_deadline_saying_why(world: World) -> None:
    world.backup("vm-1", "vm-2")
    transferring(world)
    with world.sessions.begin() as s:  # vm-2 still has time
        other = s.get(Task, f"{RUN}.vc1:vm-2")
        assert other is not None
        other.deadline_at = world.clock().replace(hour=23)
    world.clock.advance(minutes=20)

    assert overdue_tasks(world.ctx) == 1

    task = world.task()
    assert task.state == "failed"
    assert (task.error or "").startswith(
        "deadline passed in phase transfer: no progress since 2026-11-26 09:00:00"
    )
    (failed,) = world.staged("vbm.step.failed")
    assert (failed["step"], failed["task_id"], failed["snapshot_moref"]) == (
        "transfer",
        TASK,
        task.snapshot_moref,
    )
    assert world.task(f"{RUN}.vc1:vm-2").state == "running"


def test_the_watchdog_gives_an_overdue_task_with_tries_left_another_try(world: World) -> None:
    world.backup("vm-1", job={"options": {"retries": 2}})
    world.clock.advance(minutes=20)

    overdue_tasks(world.ctx)

    task = world.task()
    assert (task.phase, task.state, task.tries) == ("queued", "queued", 2)
    assert "deadline passed in phase snapshot" in (task.wait_reason or "")
    assert world.staged("vbm.step.failed") == []


async def test_a_failed_step_ends_the_task_removes_its_snapshot_and_raises_an_alert(world: World) -> None:
    world.backup("vm-1")
    moref = transferring(world)
    event = StepFailed(occurred_at=world.clock(), run_id=RUN, task_id=TASK, step="transfer",
                       reason="repository full", vm_moref="vm-1", snapshot_moref=moref)  # fmt: skip

    assert await on_step_failed(event, delivery(), deps(world)) == []

    assert (world.task().state, world.task().error) == ("failed", "repository full")
    assert world.vc.snapshot_names("vm-1") == []
    assert [e.state for e in world.ledger()] == ["removed"]
    (alert,) = world.alerts()
    assert (alert.kind, alert.severity, alert.vm_name) == ("backup-failed", "error", "vm1")
    assert alert.message == "backup of vm1 on vCenter vc1 failed in transfer: repository full"
    assert [e["alert_id"] for e in world.staged("vbm.alert.raised")] == [alert.id]
    assert world.staged("vbm.run.finished")[0]["state"] == "failed"


async def test_a_cancelled_step_raises_no_alert_and_a_late_failure_of_an_earlier_try_changes_nothing(
    world: World,
) -> None:
    world.backup("vm-1", job={"options": {"retries": 1}})
    first = transferring(world, tries=1)
    current = transferring(world, tries=2)
    late = StepFailed(occurred_at=world.clock(), run_id=RUN, task_id=TASK, step="transfer", reason="cut",
                      snapshot_moref=first)  # fmt: skip

    await on_step_failed(late, delivery(), deps(world))

    assert (world.task().state, world.task().tries) == ("running", 2)  # its fate is the second try's
    assert world.vc.snapshot_names("vm-1") == ["vbm-run-1-t2"]  # the first try's snapshot went
    assert world.alerts() == []

    cancelled = late.model_copy(update={"reason": "cancelled by request", "snapshot_moref": current})
    await on_step_failed(cancelled, delivery(), deps(world))
    assert world.task().state == "cancelled"
    assert world.vc.snapshot_names("vm-1") == []
    assert world.alerts() == []


async def test_a_message_no_worker_could_handle_raises_an_alert_once(world: World) -> None:
    event = BusRejected(occurred_at=world.clock(), consumer="mover", subject="vbm.snapshot.ready",
                        stream_seq=42, deliveries=5, reason="gave up after 5 attempts: boom")  # fmt: skip

    await on_bus_rejected(event, delivery(), deps(world))
    await on_bus_rejected(event, delivery(attempt=2), deps(world))  # redelivered

    (alert,) = world.alerts()
    assert (alert.kind, alert.severity) == ("bus-rejected", "error")
    assert "mover gave up on message 42 (vbm.snapshot.ready) after 5 deliveries" in alert.message


async def test_the_sweeper_removes_an_ended_tasks_snapshot_or_says_it_is_stuck(world: World) -> None:
    world.context(pipeline={"cleanup_attempts": 2, "cleanup_backoff": 1})
    world.backup("vm-1")
    transferring(world)
    with world.sessions.begin() as s:
        task = s.get(Task, TASK)
        assert task is not None
        task.state = "failed"
    world.vc.fail("remove_snapshot", *[VSphereError("locked", fault="FileLocked", retryable=True)] * 2)

    await sweep(deps(world))
    assert [e.state for e in world.ledger()] == ["created"] and world.alerts() == []
    world.clock.advance(seconds=5)
    await sweep(deps(world))
    (alert,) = world.alerts()
    assert (alert.kind, alert.severity, [e.state for e in world.ledger()]) == (
        "snapshot-left-behind", "critical", ["stuck"],
    )  # fmt: skip
    assert "could not remove its snapshot 'vbm-run-1' of VM vm1" in alert.message

    world.clock.advance(minutes=20)
    await sweep(deps(world))  # vCenter lets go: the sweeper keeps trying
    assert [e.state for e in world.ledger()] == ["removed"] and world.vc.snapshot_names("vm-1") == []
    with world.sessions() as s:  # the clean-up that succeeded is in the audit log, the tries not
        (record,) = s.query(AuditRecord).all()
    assert record.action == "snapshot.cleanup" and record.actor.startswith("system:")
    assert (
        record.target.startswith("vm:") and record.target.endswith("/vm-1") and "vbm-run-1" in record.params
    )


def webhook(name: str, **kw: object) -> ChannelSettings:
    return ChannelSettings(name=name, type="webhook", url=SecretStr(f"https://hooks.example/{name}"), **kw)


@pytest.fixture
def sender(world: World, monkeypatch: pytest.MonkeyPatch) -> FakeSender:
    fake = FakeSender()
    monkeypatch.setattr(channels, "send", fake)
    chosen = (
        webhook("ops"),
        webhook("all", on=("success", "warning", "failure")),
        webhook("team", scope="jobs"),
    )
    world.context(notifications=NotificationSettings(channels=chosen, retry=(1.0, 2.0)))
    return fake


@pytest.mark.parametrize(
    ("state", "told"),
    [
        ("succeeded", ["all"]),
        ("warning", ["ops", "all"]),
        ("partial", ["ops", "all"]),
        ("failed", ["ops", "all"]),
    ],
)
async def test_a_run_is_told_to_the_channels_that_want_its_outcome(
    world: World, sender: FakeSender, state: str, told: list[str]
) -> None:
    world.backup("vm-1")
    event = RunFinished(occurred_at=world.clock(), run_id=RUN, job_id="job-1", state=state)

    await on_run_finished(event, delivery(), deps(world))

    assert [name for name, _ in sender.sent] == told
    assert all(title.startswith("[vbm] Backup ") and "job-1" in title for _, title in sender.sent)


async def test_a_job_names_its_own_channels_and_outcomes(world: World, sender: FakeSender) -> None:
    world.backup("vm-1", job={"options": {"notify": {"channels": ["team"], "on": ["success"]}}})
    event = RunFinished(occurred_at=world.clock(), run_id=RUN, job_id="job-1", state="succeeded")

    await on_run_finished(event, delivery(), deps(world))

    assert sorted(name for name, _ in sender.sent) == ["all", "ops", "team"]


async def test_a_channel_that_is_down_is_retried_alone_then_given_up_with_an_alert(
    world: World, sender: FakeSender
) -> None:
    world.backup("vm-1")
    event = RunFinished(occurred_at=world.clock(), run_id=RUN, job_id="job-1", state="failed")
    sender.down = {"ops"}

    with pytest.raises(Retryable, match="ops"):
        await on_run_finished(event, delivery(attempt=1), deps(world))
    await on_run_finished(event, delivery(attempt=3), deps(world))  # the last delivery

    assert [name for name, _ in sender.sent] == ["all"]  # not told twice
    (alert,) = world.alerts()
    assert alert.kind == messages.NOTIFICATION_FAILED and "after 3 attempts" in alert.message


async def test_alerts_are_told_by_severity_but_a_failed_backup_only_by_its_runs_message(
    world: World, sender: FakeSender
) -> None:
    world.backup("vm-1")

    def alert(kind: str, severity: str, run_id: str | None) -> AlertRaised:
        return AlertRaised(occurred_at=world.clock(), alert_id=f"alert-{kind}", severity=severity, kind=kind,
                           message="m", vm_name="vm1", run_id=run_id)  # fmt: skip

    await on_alert_raised(alert("backup-failed", "error", RUN), delivery(), deps(world))
    assert sender.sent == []
    await on_alert_raised(alert("snapshot-left-behind", "critical", RUN), delivery(), deps(world))
    assert [name for name, _ in sender.sent] == ["ops", "all"]
    assert sender.sent[0][1] == "[vbm] CRITICAL snapshot-left-behind (vm1)"


async def test_a_channel_hears_alerts_at_or_above_its_level(world: World, sender: FakeSender) -> None:
    chosen = (webhook("ops"), webhook("pager", level="critical"))
    world.context(notifications=NotificationSettings(channels=chosen))

    def alert(kind: str, severity: str) -> AlertRaised:
        return AlertRaised(occurred_at=world.clock(), alert_id=f"alert-{kind}", severity=severity, kind=kind,
                           message="m")  # fmt: skip

    await on_alert_raised(alert("repository-full", "info"), delivery(), deps(world))
    await on_alert_raised(alert("vcenter-down", "error"), delivery(), deps(world))
    assert sender.sent == [("ops", "[vbm] INFO repository-full"), ("ops", "[vbm] ERROR vcenter-down"),
                           ("pager", "[vbm] ERROR vcenter-down")]  # fmt: skip
