"""The gateway's audit trail and GET /api/v1/audit, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.gateway.answers.alerts import AuditPage
from shared.catalog import audit
from shared.catalog.alerts import raise_alert
from shared.catalog.audit_chain import verify
from shared.db.audit import AuditRecord
from tests.gateway.conftest import Api, MakeApi

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def _records(api: Api) -> list[AuditRecord]:
    with api.ctx.sessions() as s:
        return list(s.scalars(select(AuditRecord).order_by(AuditRecord.id)))


async def _raw(api: Api, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    async with api.client.get(f"/api/v1{path}", headers={**api.auth, **(headers or {})}) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_changes_and_refusals_are_recorded_without_secrets(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url)
    with api.ctx.sessions.begin() as s:
        raise_alert(s, key="k", kind="verify_failed", severity="error", now=T0, message="rp-1 is damaged")
    status, body = await api.call("GET", "/alerts")
    alert_id = body["alerts"][0]["id"]
    assert _records(api) == []  # reading changes nothing and is not recorded
    async with api.client.post(
        f"/api/v1/alerts/{alert_id}/ack", headers={**api.auth, "X-Request-Id": "ticket-42"}
    ) as resp:
        assert resp.status == 200 and resp.headers["X-Request-Id"] == "ticket-42"
    [ack] = _records(api)
    assert ack.actor.startswith("admin (key ") and ack.source == "127.0.0.1"
    assert (ack.action, ack.target, ack.result, ack.request_id) == (
        "POST /api/v1/alerts/{alert_id}/ack",
        f"alert:{alert_id}",
        "ok",
        "ticket-42",
    )
    # a refusal: a key that is no key, a secret in the body; recorded with nobody as the actor
    canary = {"name": "n", "password": "canary-xyz", "s3": {"secret_key": "canary-xyz"}}
    async with api.client.post(
        "/api/v1/jobs", json=canary, headers={"X-API-Key": "vbm_0000000000000000_nope", "X-Request-Id": "a b"}
    ) as resp:
        assert resp.status == 401
        generated = resp.headers["X-Request-Id"]
    assert generated != "a b" and len(generated) == 32  # not sane: a new one
    refused = _records(api)[-1]
    assert (refused.actor, refused.action, refused.request_id) == ("-", "POST /api/v1/jobs", generated)
    assert refused.result.startswith("401 Unauthorized: ")
    # an error of a known caller, with the secret masked
    secret = {"channel": "nope", "token": "canary-xyz"}
    async with api.client.post("/api/v1/notifications/test", json=secret, headers=api.auth) as resp:
        assert resp.status == 422 and len(resp.headers["X-Request-Id"]) == 32  # an error answer too
    failed = _records(api)[-1]
    assert failed.result.startswith("422 Unprocessable Entity: channel: no notification channel named")
    assert json.loads(failed.params) == {"body": {"channel": "nope", "token": "***"}}
    status, body = await api.call("DELETE", "/jobs/no-such-job")
    assert status == 404 and _records(api)[-1].target == "job:no-such-job"
    assert _records(api)[-1].result.startswith("404 Not Found")
    status, body = await api.call("POST", "/restores", json={"mode": "new_vm"})
    assert status == 422
    assert _records(api)[-1].result == f"422 Unprocessable Entity: {body['detail']}"
    # a login that fails names who tried, never the password (whatever answers /api/v1/session)
    async with api.client.post("/api/v1/session", json={"user": "alice", "password": "canary-xyz"}) as resp:
        assert resp.status >= 400
    login = _records(api)[-1]
    assert (login.action, login.target, login.actor) == ("login", "user:alice", "-")
    assert login.result != "ok" and json.loads(login.params)["body"]["password"] == "***"
    for row in _records(api):
        assert "canary" not in f"{row.params} {row.result} {row.target}"
    with api.ctx.sessions() as s:
        assert verify(s).ok and verify(s).count == 6


async def test_the_log_is_read_filtered_paged_and_exported(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url)
    for i in range(30):
        audit.append(
            api.ctx.sessions,
            actor="alice (key 0123456789abcdef)" if i % 2 else "system:scheduler",
            action="run.scheduled" if i % 2 == 0 else "POST /api/v1/jobs/{job_id}/run",
            target=f"job:j{i % 3}",
            params={"vm": "vc1/vm-42"} if i == 7 else {"n": i},
            result="ok" if i % 5 else "409 Conflict: busy",
            source="10.0.0.9",
            at=T0 + timedelta(hours=i),
        )
    status, body = await api.call("GET", "/audit?limit=10")
    assert status == 200 and body["total"] == 30 and len(body["records"]) == 10
    assert [r["id"] for r in body["records"]] == list(range(30, 20, -1)) and body["next_cursor"] == 21
    AuditPage.model_validate(body)
    status, body = await api.call("GET", "/audit?limit=10&cursor=21")
    assert [r["id"] for r in body["records"]] == list(range(20, 10, -1))
    status, body = await api.call("GET", "/audit?limit=5&offset=28")
    assert [r["id"] for r in body["records"]] == [2, 1] and body["next_cursor"] is None
    status, body = await api.call("GET", "/audit?user=alice&result=error")
    assert {r["id"] for r in body["records"]} == {6, 16, 26}
    status, body = await api.call("GET", "/audit?action=run.scheduled&target=job:j0")
    assert {r["id"] for r in body["records"]} == {1, 7, 13, 19, 25}
    status, body = await api.call("GET", "/audit?vm=vm-42")
    assert [r["id"] for r in body["records"]] == [8] and body["records"][0]["params"] == {"vm": "vc1/vm-42"}
    since, until = (T0 + timedelta(hours=10)).isoformat(), "2026-11-27T15:00:00Z"
    status, body = await api.call("GET", "/audit", params={"since": since, "until": until})
    assert [r["id"] for r in body["records"]] == [12, 11]
    status, text, headers = await _raw(api, "/audit?format=csv&user=system:scheduler")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(audit.COLUMNS) and len(rows) == 16 and rows[1][0] == "29"
    assert rows[1][2] == "system:scheduler" and json.loads(rows[1][6]) == {"n": 28}
    status, text, headers = await _raw(api, "/audit?format=jsonl&limit=3")
    lines = [json.loads(line) for line in text.splitlines()]
    assert headers["Content-Type"].startswith("application/x-ndjson") and [r["id"] for r in lines] == [
        30,
        29,
        28,
    ]


async def test_bad_filters_get_422_naming_the_parameter(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url)
    for query, name in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=-1", "cursor"),
        ("offset=x", "offset"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=2026-12-02&until=2026-12-01", "until"),
        ("result=maybe", "result"),
        ("format=xml", "format"),
        ("users=alice", "users"),
    ]:
        status, body = await api.call("GET", f"/audit?{query}")
        assert status == 422 and body["detail"].startswith(f"{name}:"), (query, body)
    status, body = await api.call("GET", "/audit", headers={"X-API-Key": "nope"})
    assert status == 401
