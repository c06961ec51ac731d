"""/api/v1/alerts and /api/v1/notifications, and jobs naming notification channels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lab.launcher import Lab
from shared.catalog.alerts import raise_alert
from tests.gateway.conftest import MakeApi, lab_vcenter
from tests.plugins.webhook import WebhookReceiver

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


async def test_alerts_are_listed_newest_first_and_acknowledged(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url)
    with api.ctx.sessions.begin() as s:
        for i in range(3):
            raise_alert(
                s, key=f"k{i}", kind="verify_failed", severity="error", now=T0 + timedelta(minutes=i),
                message=f"restore point rp-{i} is damaged", vm_name="web",
            )  # fmt: skip
    status, body = await api.call("GET", "/alerts")
    assert status == 200 and body["total"] == 3
    assert [a["message"] for a in body["alerts"]] == [f"restore point rp-{i} is damaged" for i in (2, 1, 0)]
    first = body["alerts"][0]["id"]
    status, acked = await api.call("POST", f"/alerts/{first}/ack")
    assert status == 200 and acked["acknowledged_at"] is not None
    status, body = await api.call("GET", "/alerts")
    assert body["total"] == 2 and first not in [a["id"] for a in body["alerts"]]
    status, body = await api.call("GET", "/alerts?all=true&limit=1")
    assert body["total"] == 3 and len(body["alerts"]) == 1
    status, body = await api.call("POST", "/alerts/alert-nope/ack")
    assert status == 404 and "no alert 'alert-nope'" in body["detail"]
    status, body = await api.call("GET", "/alerts?limit=0")
    assert status == 422 and body["detail"].startswith("limit:")


async def test_channels_are_shown_without_secrets_and_can_be_tested(
    make_api: MakeApi, db_url: str, webhook_receiver: WebhookReceiver
) -> None:
    api = await make_api(
        db_url,
        notifications={
            "channels": [
                {"name": "chat", "type": "slack", "url": webhook_receiver.url("/T0/B0/token-xyz")},
                {"name": "dead", "type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "k"},
            ],
            "timeout": 3,
        },
    )
    status, body = await api.call("GET", "/notifications")
    assert status == 200 and body["deliveries"] == []
    assert [(c["name"], c["endpoint"], c["signed"]) for c in body["channels"]] == [
        ("chat", f"127.0.0.1:{webhook_receiver.port}", False),
        ("dead", "127.0.0.1:9", True),
    ]
    assert "token-xyz" not in str(body)
    status, body = await api.call("POST", "/notifications/test", json={"channel": "chat"})
    assert status == 200 and body == {"results": [{"channel": "chat", "ok": True, "error": None}], "ok": True}
    assert "[vbm] Test notification" in webhook_receiver.wait_for(1)[0].json()["text"]
    status, body = await api.call("POST", "/notifications/test")
    assert status == 200 and body["ok"] is False
    assert [r["ok"] for r in body["results"]] == [True, False] and "cannot post to 127.0.0.1:9" in body[
        "results"
    ][1]["error"]
    status, body = await api.call("POST", "/notifications/test", json={"channel": "nope"})
    assert status == 422 and "no notification channel named 'nope' (channels: chat, dead)" in body["detail"]


async def test_a_job_naming_an_unknown_channel_is_refused(make_api: MakeApi, db_url: str, lab: Lab) -> None:
    api = await make_api(
        db_url,
        (lab_vcenter(lab),),
        notifications={"channels": [{"name": "ops", "type": "slack", "url": "https://hooks.example/1"}]},
    )
    job = {"name": "n", "vcenter": "lab", "vms": [{"name": "vm1"}]}
    status, body = await api.call("POST", "/jobs", json={**job, "options": {"notify": {"channels": ["opz"]}}})
    assert status == 422
    assert body["detail"] == "options.notify.channels: no notification channel named 'opz' (channels: ops)"
    status, body = await api.call(
        "POST", "/jobs", json={**job, "options": {"notify": {"channels": ["ops"], "on": ["success"]}}}
    )
    assert status == 201 and body["options"]["notify"] == {"channels": ["ops"], "on": ["success"]}
