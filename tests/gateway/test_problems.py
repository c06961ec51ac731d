"""One error format for every 4xx and 5xx: RFC 9457 `application/problem+json` with `type`,
`title`, `status`, `detail`, and `errors` naming each invalid field and where it was."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tests.gateway.conftest import Api, MakeApi


async def _problem(api: Api, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    headers = {**api.auth, **kw.pop("headers", {})}
    async with api.client.request(method, path, headers=headers, **kw) as resp:
        assert resp.content_type == "application/problem+json", (method, path, resp.content_type)
        body = await resp.json()
        assert body["type"] == "about:blank" and body["status"] == resp.status, body
        assert body["title"] and body["detail"], body
        return resp.status, body


async def test_every_kind_of_error_is_a_problem(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    assert (await _problem(api, "GET", "/api/v1/nope"))[0] == 404  # an unknown route
    status, body = await _problem(api, "DELETE", "/api/v1/runs")
    assert status == 405 and "allowed: GET, HEAD" in body["detail"]
    assert (await _problem(api, "GET", "/api/v1/jobs", headers={"X-API-Key": "wrong"}))[0] == 401
    assert (await _problem(api, "POST", "/api/v1/jobs", data=b"{not json"))[0] == 400
    assert (await _problem(api, "POST", "/api/v1/jobs", data="[" * 40 + "]" * 40))[0] == 400
    big = io.BytesIO(b"x" * (1024 * 1024 + 1))
    assert (await _problem(api, "POST", "/api/v1/jobs", data=big))[0] == 413
    assert (await _problem(api, "GET", "/api/v1/jobs/no-such-job"))[0] == 404
    # a body with several wrong fields names each, where it was
    status, body = await _problem(api, "POST", "/api/v1/users", json={"name": 5, "role": "god", "extra": 1})
    assert status == 422
    fields = {(e["field"], e["in"]) for e in body["errors"]}
    assert {("name", "body"), ("role", "body"), ("extra", "body")} <= fields, body
    assert body["detail"] == f"{body['errors'][0]['field']}: {body['errors'][0]['detail']}"
    # a query parameter says it was in the query
    status, body = await _problem(api, "GET", "/api/v1/alerts?limit=0")
    assert status == 422 and body["errors"] == [
        {"field": "limit", "in": "query", "detail": "'0' is not a whole number from 1 to 1000"}
    ]
    status, body = await _problem(api, "GET", "/api/v1/audit?result=maybe")
    assert status == 422 and body["errors"][0]["in"] == "query"
    # a store's own refusal of a field of the body
    status, body = await _problem(
        api, "POST", "/api/v1/users", json={"name": "ana", "role": "viewer", "password": "short"}
    )
    assert status == 422 and body["errors"] == [
        {"field": "password", "in": "body", "detail": "must be at least 12 characters long"}
    ]
