"""/api/v1/alerts and /api/v1/notifications, and jobs naming notification channels."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lab.launcher import Lab
from services.gateway.answers.alerts import Alert, AlertPage, Notifications, Tried
from services.gateway.answers.service import About, Health, Ready, Services, Where
from shared.catalog.alerts import raise_alert
from shared.cli import alerts as cli_alerts
from shared.contracts import ServiceHeartbeat, heartbeat_subject
from shared.db.models import Notification
from tests.gateway.conftest import Api, MakeApi, lab_vcenter
from tests.plugins.webhook import WebhookReceiver

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def vbm(capsys: pytest.CaptureFixture[str], api: Api, *argv: str) -> Any:
    """What `vbm <argv>` prints, as JSON (run in this process, on the gateway's settings)."""
    parser = argparse.ArgumentParser(prog="vbm")
    cli_alerts.add_parsers(parser.add_subparsers(dest="command", required=True))
    capsys.readouterr()
    assert cli_alerts.run(parser.parse_args(argv), api.ctx.settings) == 0
    return json.loads(capsys.readouterr().out)


async def test_alerts_are_listed_newest_first_and_acknowledged(
    make_api: MakeApi, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(db_url)
    with api.ctx.sessions.begin() as s:
        for i in range(3):
            raise_alert(
                s, key=f"k{i}", kind="verify_failed", severity="error", now=T0 + timedelta(minutes=i),
                message=f"restore point rp-{i} is damaged", vm_name="web",
            )  # fmt: skip
    status, body = await api.call("GET", "/alerts")
    assert status == 200 and body["total"] == 3
    AlertPage.model_validate(body)
    assert [a["message"] for a in body["alerts"]] == [f"restore point rp-{i} is damaged" for i in (2, 1, 0)]
    first = body["alerts"][0]["id"]
    status, acked = await api.call("POST", f"/alerts/{first}/ack")
    assert status == 200 and acked["acknowledged_at"] is not None
    Alert.model_validate(acked)
    status, body = await api.call("GET", "/alerts")
    assert body["total"] == 2 and first not in [a["id"] for a in body["alerts"]]
    status, body = await api.call("GET", "/alerts?all=true&limit=1")
    assert body["total"] == 3 and len(body["alerts"]) == 1
    assert (
        vbm(capsys, api, "alerts", "ls", "--all", "--limit", "1", "--json") == body
    )  # the CLI says the same
    status, body = await api.call("POST", "/alerts/alert-nope/ack")
    assert status == 404 and "no alert 'alert-nope'" in body["detail"]
    status, body = await api.call("GET", "/alerts?severity=bad")
    assert status == 422 and body["detail"].startswith("severity: 'bad' is not one of info")
    status, body = await api.call("GET", "/alerts?limit=0")
    assert status == 422 and body["detail"].startswith("limit:")


async def test_channels_are_shown_without_secrets_and_can_be_tested(
    make_api: MakeApi, db_url: str, webhook_receiver: WebhookReceiver, capsys: pytest.CaptureFixture[str]
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
    Notifications.model_validate(body)
    assert [(c["name"], c["endpoint"], c["signed"]) for c in body["channels"]] == [
        ("chat", f"127.0.0.1:{webhook_receiver.port}", False),
        ("dead", "127.0.0.1:9", True),
    ]
    assert "token-xyz" not in str(body)
    status, body = await api.call("POST", "/notifications/test", json={"channel": "chat"})
    assert status == 200 and body == {"results": [{"channel": "chat", "ok": True, "error": None}], "ok": True}
    Tried.model_validate(body)
    assert "[vbm] Test notification" in webhook_receiver.wait_for(1)[0].json()["text"]
    status, body = await api.call("POST", "/notifications/test")
    assert status == 200 and body["ok"] is False
    assert [r["ok"] for r in body["results"]] == [True, False] and "cannot post to 127.0.0.1:9" in body[
        "results"
    ][1]["error"]
    status, body = await api.call("POST", "/notifications/test", json={"channel": "nope"})
    assert status == 422 and "no notification channel named 'nope' (channels: chat, dead)" in body["detail"]

    # the delivery log pages as every list does: by cursor, filtered, unknown parameters refused
    with api.ctx.sessions.begin() as s:
        for i in range(5):
            state = "failed" if i == 3 else "sent"
            s.add(Notification(
                id=f"ntf-{i}", event=f"alert.raised:alert-{i % 2}", channel=("chat", "dead")[i % 2],
                outcome="failure", title=f"t{i}", state=state, attempts=1,
                created_at=T0 + timedelta(minutes=i),
            ))  # fmt: skip
    status, body = await api.call("GET", "/notifications?limit=2")
    assert (
        status == 200 and [d["id"] for d in body["deliveries"]] == ["ntf-4", "ntf-3"] and body["total"] == 5
    )
    Notifications.model_validate(body)
    assert vbm(capsys, api, "notify", "log", "--limit", "2", "--json") == body
    seen = [d["id"] for d in body["deliveries"]]
    while body["next_cursor"]:
        status, body = await api.call(
            "GET", "/notifications", params={"limit": 2, "cursor": body["next_cursor"]}
        )
        seen += [d["id"] for d in body["deliveries"]]
    assert seen == ["ntf-4", "ntf-3", "ntf-2", "ntf-1", "ntf-0"] and len(body["channels"]) == 2
    status, body = await api.call("GET", "/notifications?channel=dead&order=asc")
    assert [d["id"] for d in body["deliveries"]] == ["ntf-1", "ntf-3"] and body["total"] == 2
    status, body = await api.call("GET", "/notifications?state=failed&alert=alert-1")
    assert [d["id"] for d in body["deliveries"]] == ["ntf-3"]
    status, body = await api.call("GET", "/notifications?since=2026-11-27T03:03:00Z")
    assert [d["id"] for d in body["deliveries"]] == ["ntf-4", "ntf-3"]
    status, body = await api.call("GET", "/notifications?state=lost")
    assert status == 422 and body["detail"].startswith("state: 'lost' is not one of pending")
    status, body = await api.call("GET", "/notifications?chanel=dead")
    assert status == 422 and body["errors"][0]["field"] == "chanel"


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


async def test_the_gateways_own_answers_match_their_models(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url)
    now = datetime.now(UTC)
    beat = ServiceHeartbeat(
        service="mover",
        instance="mover-t",
        pid=1,
        host="h",
        version="0",
        started_at=now,
        sent_at=now,
        state="ready",
    )
    await api.ctx.bus.nc.publish(heartbeat_subject("mover"), beat.model_dump_json().encode())
    for path, model in (("/", Where), ("/healthz", Health), ("/readyz", Ready), ("/api/v1", About)):
        async with api.client.get(path) as resp:
            assert resp.status == 200, path
            model.model_validate(await resp.json())
    for _ in range(50):
        status, body = await api.call("GET", "/services")
        if status == 200 and body["services"]:
            break
        await asyncio.sleep(0.1)
    Services.model_validate(body)
    assert [r["instance"] for r in body["services"]] == ["mover-t"] and "mover" not in body["missing"]
