"""X-API-Key on every endpoint but health, readiness and login; the first-run bootstrap."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.catalog import apikeys
from shared.db.models import ApiKey
from tests.gateway.conftest import MakeApi


async def test_bootstrap_without_any_key_opens_only_status(
    make_api: MakeApi, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(db_url, with_key=False)
    for path in ("/healthz", "/readyz"):
        assert (await api.client.get(path)).status == 200
    for path in ("/api/v1", "/api/v1/services"):
        assert (await api.client.get(path)).status == 200, path
    assert "no user and no API key exist" in caplog.text
    resp = await api.client.get("/api/v1/jobs")
    assert resp.status == 401
    body = await resp.json()
    assert resp.content_type == "application/problem+json"
    assert body == {
        "type": "about:blank",
        "status": 401,
        "title": "Unauthorized",
        "detail": "missing X-API-Key header or session cookie: log in (POST /api/v1/session) or send"
        " an API key in the X-API-Key header (create one with `vbm apikey create NAME`)",
    }
    # The first key closes the bootstrap door.
    api.new_key("first")
    assert (await api.client.get("/api/v1/services")).status == 401
    assert (await api.client.get("/healthz")).status == 200


async def test_keys_are_checked_touched_and_revocable(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url)
    status, body = await api.call("GET", "")
    assert status == 200 and body["api"] == "v1"
    status, body = await api.call("GET", "/nowhere")
    assert status == 404 and body["title"] == "Not Found"
    status, body = await api.call("PATCH", "/jobs")
    assert status == 405 and body["status"] == 405
    assert (await api.call("GET", "/jobs"))[0] == 200  # /api/v1 itself is public: this one uses the key
    with api.ctx.sessions() as s:
        row = s.query(ApiKey).one()
        first_use = row.last_used_at
        assert first_use is not None
        assert row.secret_sha256 not in api.key and api.key.split("_", 2)[2] not in row.secret_sha256
    # Within a minute another request does not write last_used_at again.
    assert (await api.call("GET", "/services"))[0] == 200
    with api.ctx.sessions() as s:
        assert s.query(ApiKey).one().last_used_at == first_use

    key_id = api.key.split("_")[1]
    for bad, why in [
        ("nonsense", "invalid X-API-Key"),
        (api.key[:-1] + ("A" if api.key[-1] != "A" else "B"), "invalid X-API-Key"),
        (f"vbm_{'0' * 16}_{api.key.split('_', 2)[2]}", "invalid X-API-Key"),
        (f"vbm_{key_id}_", "invalid X-API-Key"),
    ]:
        status, body = await api.call("GET", "/jobs", headers={apikeys.HEADER: bad})
        assert status == 401 and body["detail"].startswith(why), (bad, body)

    with api.ctx.sessions.begin() as s:
        apikeys.revoke(s, "tests", api.ctx.clock())
    status, body = await api.call("GET", "/jobs")
    assert status == 401 and body["detail"].startswith("X-API-Key 'tests' was revoked")
    api.key = api.new_key("second")
    assert (await api.call("GET", "/jobs"))[0] == 200


async def test_last_used_is_written_again_after_a_minute(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'k.db'}")
    start = api.ctx.clock()
    with api.ctx.sessions() as s:
        info, why = apikeys.verify(s, api.key)
    assert info is not None and why == "" and info.last_used_at is None
    assert apikeys.needs_touch(info, start)
    for later, expected in [(0, start), (30, start), (61, start + timedelta(seconds=61)), (20, None)]:
        with api.ctx.sessions.begin() as s:
            apikeys.touch(s, info.id, start + timedelta(seconds=later))
        with api.ctx.sessions() as s:
            last = s.query(ApiKey).one().last_used_at
            assert last == (expected or start + timedelta(seconds=61)), later
    with api.ctx.sessions.begin() as s, pytest.raises(apikeys.ApiKeyError, match="exists already"):
        apikeys.create(s, "tests", start)
    with api.ctx.sessions.begin() as s, pytest.raises(apikeys.ApiKeyError, match="must be"):
        apikeys.create(s, "bad name!", start)
