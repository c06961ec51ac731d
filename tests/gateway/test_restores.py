"""/api/v1/restores: requests are checked and queued with their event; list, show, cancel."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import select

from services.gateway.answers import restores as answers
from shared.db.models import Outbox, Restore, RestorePointRow
from shared.settings import VCenterSettings
from tests.gateway.conftest import MakeApi

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
VC = VCenterSettings(name="vc1", url="https://vc1.example.com/sdk", username="u", password=SecretStr("p"))


async def test_restore_requests(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", vcenters=(VC,))
    with api.ctx.sessions.begin() as s:
        for rp_id, state in (
            ("rp-20261126T090000Z-00000001", "ok"),
            ("rp-20261126T090000Z-00000002", "failed"),
        ):
            s.add(
                RestorePointRow(
                    id=rp_id, vcenter="vc1", vm_moref="vm-1", vm_name="web", repository="/repo", kind="full",
                    disks=[{"key": 2000, "capacity": 1 << 30}], logical_bytes=1 << 30, bytes_read=0,
                    bytes_stored=0, started_at=T0, finished_at=T0, verify_state=state,
                    verify_problems=["chunk 00ff is missing"] if state == "failed" else [],
                )
            )  # fmt: skip
    good = {"restore_point_id": "rp-20261126T090000Z-00000001", "name": "web-restored", "datastore": "ds1"}

    status, body = await api.call("POST", "/restores", json={**good, "colour": "red"})
    assert status == 422 and body["detail"].startswith("colour: Extra inputs")
    status, body = await api.call("POST", "/restores", json={**good, "name": ""})
    assert status == 422 and body["detail"].startswith("name:")
    status, body = await api.call("POST", "/restores", json={**good, "restore_point_id": "rp-nope"})
    assert status == 404 and body["detail"] == "no restore point 'rp-nope'"
    status, body = await api.call("POST", "/restores", json={**good, "vcenter": "vc9"})
    assert status == 422 and body["detail"] == "vcenter: 'vc9' is not a configured vCenter (configured: vc1)"
    status, body = await api.call("POST", "/restores", json={**good, "disk_format": "eager"})
    assert status == 422 and body["detail"].startswith("disk_format:") and "'thick'" in body["detail"]
    for mode in ("in_place", "instant"):
        status, body = await api.call(
            "POST", "/restores", json={**good, "mode": mode, "confirm": True, "disk_format": "thin"}
        )
        assert (
            status == 422
            and body["detail"].startswith("disk_format: ")
            and "does not apply" in body["detail"]
        )
    bad = {**good, "restore_point_id": "rp-20261126T090000Z-00000002"}
    status, body = await api.call("POST", "/restores", json=bad)
    assert status == 409 and "failed verification (chunk 00ff is missing)" in body["detail"]
    assert "allow_unverified" in body["detail"]

    status, body = await api.call(
        "POST", "/restores", json={**good, "network": "VM Network", "power_on": True, "disk_format": "thick"}
    )
    assert status == 202 and body["state"] == "queued" and body["bytes_total"] == 1 << 30
    restore_id = body["id"]
    assert body["target"]["disk_format"] == "thick" and body["target"]["requested_by"].startswith(
        "admin (key "
    )
    assert body["target"]["network"] == "VM Network" and body["target"]["vcenter"] == "vc1"
    answers.Restore.model_validate(body)
    status, again = await api.call("POST", "/restores", json=good)
    assert status == 409 and "already creating a VM named 'web-restored'" in again["detail"]
    with api.ctx.sessions() as s:
        staged = [o for o in s.scalars(select(Outbox)) if o.subject == "vbm.restore.requested"]
        assert len(staged) == 1 and restore_id in staged[0].payload

    status, page = await api.call("GET", "/restores")
    assert status == 200 and page["total"] == 1 and page["restores"][0]["id"] == restore_id
    answers.Restores.model_validate(page)
    status, one = await api.call("GET", f"/restores/{restore_id}")
    assert status == 200 and one["phase"] == "queued"
    status, one = await api.call("POST", f"/restores/{restore_id}/cancel")
    assert status == 202 and answers.Restore.model_validate(one).cancel_requested is True
    with api.ctx.sessions.begin() as s:
        row = s.get(Restore, restore_id)
        assert row is not None
        row.state = "cancelled"
    status, body = await api.call("POST", f"/restores/{restore_id}/cancel")
    assert status == 409 and "has already ended (cancelled)" in body["detail"]
    status, body = await api.call("GET", "/restores/restore-nope")
    assert status == 404 and body["detail"] == "no restore 'restore-nope'"


async def test_reports_and_the_public_key(make_api: MakeApi, tmp_path: Path) -> None:
    import json

    from shared.catalog import reports
    from shared.db.models import RestoreReport

    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", vcenters=(VC,))
    status, key = await api.call("GET", "/reports/public-key")
    assert status == 200 and key["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    answers.PublicKey.model_validate(key)
    signed = reports.sign(
        reports.signing_key(api.ctx.settings.data_dir), {"restore_id": "restore-1", "result": "passed"}
    )
    assert signed["key_id"] == key["key_id"]
    with api.ctx.sessions.begin() as s:
        s.add(
            RestoreReport(
                id="restore-1", restore_point_id="rp-1", vm_name="web", ok=True, created_at=T0,
                signed=json.dumps(signed),
            )
        )  # fmt: skip
    status, listing = await api.call("GET", "/reports?vm=web")
    assert status == 200 and [r["id"] for r in listing["reports"]] == ["restore-1"]
    answers.Reports.model_validate(listing)
    assert (await api.call("GET", "/reports?vm=db"))[1]["reports"] == []
    status, got = await api.call("GET", "/reports/restore-1")
    answers.SignedReport.model_validate(got)
    assert status == 200 and reports.verify(got, key["public_key_pem"]) == {
        "restore_id": "restore-1",
        "result": "passed",
    }
    status, problem = await api.call("GET", "/reports/nope")
    assert status == 404 and problem["detail"] == "no report 'nope'"
