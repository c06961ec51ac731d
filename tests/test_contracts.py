from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared import contracts as c

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

SAMPLES: list[c.Event] = [
    c.JobRequested(occurred_at=NOW, run_id="run-1", job_id="job-1", trigger="manual"),
    c.SnapshotReady(
        occurred_at=NOW,
        run_id="run-1",
        task_id="t-1",
        vcenter="vc",
        datacenter="DC0",
        vmx_path="[ds] web/web.vmx",
        vm_moref="vm-1",
        vm_name="web",
        snapshot_moref="snapshot-1",
        snapshot_name="vbm-run-1",
        disks=(c.DiskRef(key=2000, capacity_bytes=1024, datastore_path="[ds] web/web.vmdk"),),
    ),
    c.TransferDone(
        occurred_at=NOW, run_id="run-1", task_id="t-1", restore_point_id="rp-1", bytes_read=1, bytes_stored=1
    ),
    c.VerifyDone(occurred_at=NOW, run_id="run-1", task_id="t-1", restore_point_id="rp-1", ok=True),
    c.VerifyRequested(occurred_at=NOW, request_id="verify-1", restore_point_id="rp-1"),
    c.RestoreRequested(occurred_at=NOW, restore_id="restore-1", restore_point_id="rp-1"),
    c.RestoreDone(
        occurred_at=NOW, restore_id="restore-1", restore_point_id="rp-1", state="failed", vm_name="x"
    ),
    c.ReplicateRequested(occurred_at=NOW, replication_id="rep-1", restore_point_id="rp-1"),
    c.ReplicateDone(
        occurred_at=NOW,
        replication_id="rep-1",
        restore_point_id="rp-1",
        target="s3://h/b",
        ok=True,
        chunks_sent=3,
        bytes_sent=100,
    ),
    c.StepFailed(occurred_at=NOW, run_id="run-1", step="transfer", reason="cut"),
    c.RunFinished(occurred_at=NOW, run_id="run-1", job_id="job-1", state="partial"),
    c.AlertRaised(occurred_at=NOW, alert_id="a-1", severity="error", kind="snapshot", message="m"),
    c.BusRejected(occurred_at=NOW, consumer="mover", subject="vbm.x", stream_seq=3, deliveries=1, reason="r"),
]


def test_every_durable_subject_has_one_contract() -> None:
    assert {e.SUBJECT for e in SAMPLES} == set(c.Subject)
    assert set(c.EVENT_TYPES) == set(c.STREAM_SUBJECTS)
    assert all(not s.startswith(c.LIVE_PREFIX) for s in c.STREAM_SUBJECTS)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_and_deterministic_msg_id(event: c.Event) -> None:
    again = c.event_type_for(event.SUBJECT.value).model_validate_json(event.model_dump_json())
    assert again == event
    assert again.msg_id() == event.msg_id()
    assert event.msg_id()


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_unknown_fields_and_versions_are_refused(event: c.Event) -> None:
    data = event.model_dump(mode="json")
    with pytest.raises(ValidationError):
        type(event).model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError):
        type(event).model_validate({**data, "schema_version": 2})


def test_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        SAMPLES[0].run_id = "other"  # type: ignore[misc]


def test_ids_are_checked() -> None:
    with pytest.raises(ValidationError, match="run_id"):
        c.JobRequested(occurred_at=NOW, run_id="has space", job_id="j", trigger="manual")


def test_unknown_subject() -> None:
    with pytest.raises(KeyError, match=r"vbm\.nope"):
        c.event_type_for("vbm.nope")
