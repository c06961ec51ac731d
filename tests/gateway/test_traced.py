"""The gateway starts a run's trace, or continues the caller's: a `traceparent` sent with
POST /jobs/{id}/run comes out on the JobRequested message's headers and is kept with the run
(whether this process records spans or not: W3C context passes through)."""

from __future__ import annotations

from lab.launcher import Lab
from shared.db.models import Run
from tests.gateway.conftest import MakeApi, lab_vcenter
from tests.gateway.test_jobs import make

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_run_asked_for_carries_the_callers_trace(make_api: MakeApi, db_url: str, lab: Lab) -> None:
    api = await make_api(db_url, (lab_vcenter(lab),))
    job = await make(api)
    requested = await api.ctx.bus.js.subscribe("vbm.job.requested", ordered_consumer=True)
    sent = {**api.auth, "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    async with api.client.post(f"/api/v1/jobs/{job['id']}/run", headers=sent) as resp:
        assert resp.status == 202
        run_id = (await resp.json())["run_id"]
    msg = await requested.next_msg(timeout=5)
    await requested.unsubscribe()
    assert msg.headers is not None and msg.headers["traceparent"].split("-")[1] == TRACE
    assert msg.headers["Nats-Msg-Id"] == f"job.requested:{run_id}"
    with api.ctx.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None and run.trace_context is not None
        assert run.trace_context["traceparent"].split("-")[1] == TRACE
