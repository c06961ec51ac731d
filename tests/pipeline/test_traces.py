"""One backup run is one trace: the scheduler's slot starts it, and the snapshotter's, mover's,
verifier's and notifier's spans (real processes, exporting over OTLP/HTTP to a receiver this test
runs) are its descendants, parent links intact, a redelivered message included. The services'
log lines of the run carry its run_id and trace_id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from lab.launcher import DiskSpec, LabSpec, VMSpec
from tests.pipeline.conftest import MIB, Pipeline

ERROR = 2  # Status.STATUS_CODE_ERROR


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    status: int


@dataclass
class Receiver:
    """An OTLP/HTTP (protobuf) trace receiver: what a collector, Jaeger or Tempo would get."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)

    async def export(self, request: web.Request) -> web.Response:
        body = ExportTraceServiceRequest.FromString(await request.read())
        for rs in body.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            status=s.status.code,
                        )
                    )
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")


def _value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value") or "string_value")


@pytest.fixture
async def otlp() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield receiver
    await runner.cleanup()


async def test_a_scheduled_run_is_one_trace_across_the_services(
    pipeline_factory: Callable[..., Pipeline], otlp: Receiver
) -> None:
    spec = LabSpec(vms=(VMSpec("web", (DiskSpec(3 * MIB, seed=31),), cbt=True),))
    p = pipeline_factory(spec, VBM_OTEL__ENDPOINT=otlp.url)
    job_id = p.create_job("traced", ["web"], schedule={"kind": "interval", "every_minutes": 60})
    run_id, _ = p.missed_slot(job_id)  # due as the scheduler starts
    # the mover's first try fails (every read of the disk, its own retries included): redelivered
    p.lab.download_fault("fail", path="web-flat.vmdk", status=500, count=5)
    p.start("scheduler", "snapshotter", "mover", "verifier", "notifier")
    await p.wait_created(run_id)
    run = await p.wait_run(run_id)
    assert run.state == "succeeded", p.dump(run_id)
    for _ in range(100):  # verified after the run ended; then the notifier hears of it
        if [rp.verify_state for rp in p.restore_points(run_id)] == ["ok"]:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    # a run asked for outside any trace (as `vbm job run` does): its trace starts where the
    # snapshotter hears of it, and the snapshot step started by the dispatcher joins it
    manual = await p.run_job(job_id)
    assert (await p.wait_run(manual)).state == "succeeded", p.dump(manual)
    await asyncio.to_thread(p.stop)  # each sends the spans it holds as it stops (to this loop)
    (heard,) = [
        s for s in otlp.spans if s.name == "vbm.job.requested" and s.attributes.get("vbm.run_id") == manual
    ]
    assert heard.parent_id == ""
    (snapshot,) = [s for s in otlp.spans if s.name == "snapshot" and s.attributes.get("vbm.run_id") == manual]
    assert (snapshot.trace_id, snapshot.parent_id) == (heard.trace_id, heard.span_id)

    (root,) = [
        s for s in otlp.spans if s.name == "scheduler slot" and s.attributes.get("vbm.run_id") == run_id
    ]
    assert root.parent_id == "" and root.service == "vbm-scheduler"
    trace = [s for s in otlp.spans if s.trace_id == root.trace_id]
    services = {s.service for s in trace}
    assert services >= {"vbm-scheduler", "vbm-snapshotter", "vbm-mover", "vbm-verifier", "vbm-notifier"}, (
        services
    )
    ids = {s.span_id for s in trace}
    orphans = [(s.service, s.name) for s in trace if s is not root and s.parent_id not in ids]
    assert orphans == []  # every span's parent is in the trace: one tree from the slot

    by_id = {s.span_id: s for s in trace}

    def chain(span: Span) -> list[str]:
        names = []
        while span.parent_id:
            span = by_id[span.parent_id]
            names.append(f"{span.service}:{span.name}")
        return names

    # the redelivery: two tries of the mover's handler, the first failed, both under one parent
    tries = sorted(
        (s for s in trace if s.service == "vbm-mover" and s.name == "vbm.snapshot.ready"),
        key=lambda s: s.attributes["vbm.attempt"],
    )
    assert [s.attributes["vbm.attempt"] for s in tries] == [1, 2]
    assert tries[0].status == ERROR and tries[1].status != ERROR
    assert tries[0].parent_id == tries[1].parent_id
    assert by_id[tries[0].parent_id].service == "vbm-snapshotter"  # the snapshot step staged it
    assert chain(tries[1])[-1] == "vbm-scheduler:scheduler slot"

    names = {(s.service, s.name) for s in trace}
    assert ("vbm-snapshotter", "vcenter create_snapshot") in names
    assert ("vbm-snapshotter", "vbm.job.requested") in names
    assert ("vbm-verifier", "vbm.transfer.done") in names
    assert ("vbm-notifier", "vbm.run.finished") in names
    (disk,) = [s for s in trace if s.name == "disk transfer" and s.status != ERROR]
    assert disk.attributes["vbm.vm"] == "web" and disk.attributes["vbm.disk"] == 2000
    assert disk.attributes["vbm.bytes_read"] > 0
    (commit,) = [s for s in trace if s.name == "repository commit"]
    assert chain(commit)[0] == "vbm-mover:vbm.snapshot.ready"
    assert len(trace) < 200  # bounded: no span per chunk
    # a vCenter call outside a run's work (planning reads the inventory) starts no trace of its own
    assert not [s.name for s in otlp.spans if s.name.startswith("vcenter ") and not s.parent_id]

    # the services' log lines (JSON: not a terminal) of this run carry its fields and trace id
    lines = [
        json.loads(line)
        for name in ("snapshotter", "mover")
        for line in (p.data / f"{name}.log").read_text().splitlines()
        if line.startswith("{")
    ]
    of_run = [line for line in lines if line.get("run_id") == run_id]
    assert {line["service"] for line in of_run} == {"snapshotter", "mover"}, of_run
    assert all(line["trace_id"] == root.trace_id and line["job"] == job_id for line in of_run), of_run
    assert {line.get("vm") for line in of_run if line["service"] == "mover"} == {"web"}
    assert any(line.get("vm") == "web" for line in of_run if line["service"] == "snapshotter")
