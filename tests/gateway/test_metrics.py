"""`GET /metrics` on the gateway: who may scrape it, and what it shows with nothing running."""

from __future__ import annotations

from shared.catalog import apikeys
from shared.model.access import Role
from shared.runtime.service import utcnow
from shared.settings import VCenterSettings
from tests.gateway.conftest import MakeApi
from tests.observe.promtool import check_metrics, names, value

CATALOG_GAUGES = {"vbm_open_snapshots", "vbm_runs", "vbm_tasks", "vbm_service_up"}


async def test_a_viewer_key_scrapes_nobody_else(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(
        db_url, (VCenterSettings(name="vc1", url="https://vc1.invalid", username="u", password="p"),)
    )
    nobody = await api.client.get("/metrics")
    assert nobody.status == 401
    problem = await nobody.json()
    assert "API key" in problem["detail"] and "Authorization" not in nobody.headers.get(
        "WWW-Authenticate", ""
    )
    wrong = await api.client.get("/metrics", headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status == 401
    with api.ctx.sessions.begin() as s:
        viewer = apikeys.create(s, "prometheus", utcnow(), role=Role.VIEWER)[1]
    for headers in ({"Authorization": f"Bearer {viewer}"}, {apikeys.HEADER: viewer}):
        answer = await api.client.get("/metrics", headers=headers)
        assert answer.status == 200, await answer.text()
        text = await answer.text()
        check_metrics(text)
        assert names(text) >= CATALOG_GAUGES
        assert value(text, "vbm_runs", state="running") == 0
        assert value(text, "vbm_open_snapshots", vcenter="vc1") == 0  # a configured vCenter, idle
        # the gateway itself heartbeats through the service runtime, which this test does not run
        assert value(text, "vbm_service_up", service="gateway") == 0


async def test_metrics_public_needs_no_key(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, metrics={"public": True})
    answer = await api.client.get("/metrics")
    assert answer.status == 200
    check_metrics(await answer.text())
    # the API is no more open for it
    assert (await api.client.get("/api/v1/jobs")).status == 401
