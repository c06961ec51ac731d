"""Event contracts: every subject has one frozen, versioned model, and docs/design.md says the same."""

import re
from datetime import UTC, datetime
from pathlib import Path

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


def _design_rows() -> dict[str, list[str]]:
    """The durable-subjects table of docs/design.md: subject -> its cells."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "design.md").read_text()
    table = text.split("### Durable subjects", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


def _field_names(cell: str) -> list[str]:
    """'a, b[] (x, y), c (note)' -> ['a', 'b', 'c']: names at the top level, notes dropped."""
    names, depth, token = [], 0, ""
    for ch in cell + ",":
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            names.append(re.split(r"[\s\[(]", token.strip(), maxsplit=1)[0])
            token = ""
        else:
            token += ch
    return names


def test_design_md_lists_every_event_as_the_code_defines_it() -> None:
    rows = _design_rows()
    assert set(rows) == set(c.EVENT_TYPES), "docs/design.md's durable subjects differ from contracts.py"
    for subject, cls in c.EVENT_TYPES.items():
        _, payload, msg_id, _, fields = rows[subject]
        assert payload == f"`{cls.__name__}`", subject
        own = [f for f in cls.model_fields if f not in ("schema_version", "occurred_at")]
        assert _field_names(fields) == own, (subject, fields)
        placeholders = {f: f"<{f}>" for f in own}
        expected = re.sub(r"<(\w+) or \w+>", r"<\1>", msg_id.strip("`"))
        expected = expected.replace("<ok as 0 or 1>", "1")
        built = cls.model_construct(**{**placeholders, "ok": True})
        assert built.msg_id() == expected, subject
