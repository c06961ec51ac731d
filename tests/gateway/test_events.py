"""GET /api/v1/events: live events over Server-Sent Events (docs/api.md, "Live events").

The fast tests change the database the way the services do (ORM changes, `tasks.move`) and read
the stream; the pipeline test follows a real run through a disconnect and a resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import ClientResponse
from sqlalchemy import select

from services.gateway.live import Hub
from shared.catalog import apikeys, users
from shared.catalog import tasks as state
from shared.catalog.alerts import raise_alert
from shared.clock import utcnow
from shared.contracts import RUN_FINAL, TASK_FINAL
from shared.db.eventlog import EventRow
from shared.db.models import Job, Restore, Run, Task
from shared.model.access import Role
from shared.model.live import Filter
from shared.settings import SecuritySettings
from tests.gateway.conftest import Api, MakeApi
from tests.pipeline.conftest import Pipeline, pipeline_factory

__all__ = ["pipeline_factory"]  # the pipeline's fixture: services on the lab, the API on their database

FAST = {"gateway": {"events_heartbeat": 0.3, "events_poll": 0.05}}


class Stream:
    """An SSE reader over an open response: `next()` is the next event (comments skipped unless
    asked for)."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp
        self.comments: list[str] = []

    async def block(self, timeout: float) -> dict[str, str]:
        fields: dict[str, str] = {}
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
            assert raw, "the stream ended"
            line = raw.decode().rstrip("\n")
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                fields.setdefault("comment", line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    async def next(self, timeout: float = 10, *, skip_progress: bool = True) -> dict[str, Any]:
        while True:
            fields = await self.block(timeout)
            if "event" not in fields:
                continue  # a comment or the retry line
            if skip_progress and fields["event"] == "progress":
                continue
            data = json.loads(fields["data"])
            assert data["type"] == fields["event"]
            if "id" in fields:
                assert int(fields["id"]) == data["id"]
            return dict(data)

    async def until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            event = await self.next(timeout)
            seen.append(event)
            if pred(event):
                return seen


def open_stream(
    api: Api, query: str = "", headers: dict[str, str] | None = None, key: str | None = None
) -> Any:
    return api.client.get(f"/api/v1/events{query}", headers={"X-API-Key": key or api.key, **(headers or {})})


def make_run(api: Api, run_id: str, job_id: str = "job-a", vms: tuple[str, ...] = ("web",)) -> None:
    now = utcnow()
    with api.ctx.sessions.begin() as s:
        if s.get(Job, job_id) is None:
            s.add(Job(id=job_id, name=job_id, vcenter="lab", vms=[], selection={}, options={},
                      repository="/x", retention={}, created_at=now, updated_at=now))  # fmt: skip
        s.add(Run(id=run_id, job_id=job_id, trigger="manual", state="queued", created_at=now))
        for vm in vms:
            s.add(Task(id=f"{run_id}.lab:{vm}", run_id=run_id, vcenter="lab", vm_moref=vm, vm_name=vm,
                       phase="queued", state="queued", created_at=now, updated_at=now))  # fmt: skip


def advance(api: Api, task_id: str, expect: str, **changes: Any) -> None:
    with api.ctx.sessions.begin() as s:
        state.move(s, task_id, expect=expect, now=utcnow(), **changes)


def key_of(api: Api, role: Role) -> str:
    with api.ctx.sessions.begin() as s:
        users.add(s, f"{role.value}-user", role, utcnow(), SecuritySettings())
        return apikeys.create(s, f"k-{role.value}", utcnow(), owner=f"{role.value}-user")[1]


async def test_state_changes_arrive_in_order_with_ids_and_the_answer_is_an_event_stream(
    make_api: MakeApi, db_url: str
) -> None:
    api = await make_api(db_url, **FAST)
    async with open_stream(api) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        stream = Stream(resp)
        await stream.block(5)  # the retry line and "connected": the hub has its cursor now
        make_run(api, "run-1")
        first = await stream.next()
        assert (first["type"], first["run_id"], first["job_id"], first["state"]) == (
            "run.state", "run-1", "job-a", "queued",
        )  # fmt: skip
        task = await stream.next()
        assert (task["type"], task["task_id"], task["phase"], task["vbm_phase"]) == (
            "task.state", "run-1.lab:web", "queued", "queued",
        )  # fmt: skip
        advance(api, "run-1.lab:web", "queued", phase="snapshot", state="running")
        advance(api, "run-1.lab:web", "snapshot", phase="transfer", bytes_total=100, bytes_done=40, rate=20.0)
        moved: list[dict[str, Any]] = []
        samples: list[dict[str, Any]] = []
        while len(moved) < 2 or not any(p["bytes_done"] == 40 for p in samples):
            event = await stream.next(skip_progress=False)  # a sample may come before a state change
            (samples if event["type"] == "progress" else moved).append(event)
        assert [(e["phase"], e["vbm_phase"]) for e in moved] == [
            ("snapshot", "snapshot"),
            ("downloading", "transfer"),
        ]
        assert [e["id"] for e in (first, task, *moved)] == sorted({e["id"] for e in (first, task, *moved)})
        sample = samples[-1]
        assert "id" not in sample
        got = [sample[k] for k in ("task_id", "bytes_done", "bytes_total", "rate", "eta_s", "phase")]
        assert got == ["run-1.lab:web", 40, 100, 20.0, 3.0, "downloading"]
        with api.ctx.sessions.begin() as s:
            raise_alert(s, key="k1", kind="backup_failed", severity="error", message="web failed",
                        now=utcnow(), vm_name="web", run_id="run-1")  # fmt: skip
        alert = await stream.next()
        assert (alert["type"], alert["severity"], alert["run_id"], alert["job_id"]) == (
            "alert.raised", "error", "run-1", "job-a",
        )  # fmt: skip


async def test_heartbeats_keep_a_quiet_stream_open(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, **FAST)
    async with open_stream(api) as resp:
        stream = Stream(resp)
        for _ in range(3):
            await stream.block(2)
        assert stream.comments.count("heartbeat") >= 2


async def test_filters_by_run_job_and_type(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, **FAST)
    async with (
        open_stream(api, "?run=run-2&type=run") as by_run,
        open_stream(api, "?job=job-b,job-c") as by_job,
        open_stream(api, "?type=task&type=alert") as by_type,
    ):
        streams = [Stream(by_run), Stream(by_job), Stream(by_type)]
        for stream in streams:
            await stream.block(5)
        make_run(api, "run-1", "job-a")
        make_run(api, "run-2", "job-b")
        with api.ctx.sessions.begin() as s:
            s.get(Run, "run-2").state = "running"  # type: ignore[union-attr]
        only_run = [await streams[0].next(), await streams[0].next()]
        assert [(e["type"], e["run_id"], e["state"]) for e in only_run] == [
            ("run.state", "run-2", "queued"), ("run.state", "run-2", "running"),
        ]  # fmt: skip
        only_job = [await streams[1].next() for _ in range(3)]
        assert {e["job_id"] for e in only_job} == {"job-b"}
        assert [e["type"] for e in only_job] == ["run.state", "task.state", "run.state"]
        only_tasks = [await streams[2].next(), await streams[2].next()]
        assert [(e["type"], e["run_id"]) for e in only_tasks] == [
            ("task.state", "run-1"),
            ("task.state", "run-2"),
        ]


async def test_resume_after_last_event_id_and_an_id_too_old(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, **FAST)
    async with open_stream(api) as resp:
        stream = Stream(resp)
        await stream.block(5)
        make_run(api, "run-1", vms=("web", "db"))
        seen = [await stream.next() for _ in range(3)]
    make_run(api, "run-2")  # while nobody listens
    advance(api, "run-1.lab:web", "queued", phase="snapshot", state="running")
    with api.ctx.sessions() as s:
        ids = list(s.scalars(select(EventRow.id).order_by(EventRow.id)))
    for how in (
        {"headers": {"Last-Event-ID": str(seen[0]["id"])}},
        {"query": f"?last_event_id={seen[0]['id']}"},
    ):
        async with open_stream(api, how.get("query", ""), how.get("headers")) as resp:  # type: ignore[arg-type]
            stream = Stream(resp)
            again = [await stream.next() for _ in range(len(ids) - 1)]
        assert [e["id"] for e in again] == ids[1:]
    with api.ctx.sessions.begin() as s:
        s.delete(s.get(EventRow, ids[0]))
        s.delete(s.get(EventRow, ids[1]))
    async with open_stream(api, headers={"Last-Event-ID": str(ids[0] - 1)}) as resp:
        reset = await Stream(resp).next()
    assert reset["type"] == "reset" and "reload" in reset["reason"]
    async with open_stream(api, headers={"Last-Event-ID": "999999"}) as resp:
        reset = await Stream(resp).next()
    assert reset["type"] == "reset" and "unknown" in reset["reason"]


async def test_access_and_bad_queries(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, **FAST)
    async with api.client.get("/api/v1/events") as resp:
        assert resp.status == 401
    async with api.client.head("/api/v1/events", headers=api.auth) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    viewer = key_of(api, Role.VIEWER)
    async with open_stream(api, key=viewer) as resp:
        assert resp.status == 200
        stream = Stream(resp)
        await stream.block(5)
        make_run(api, "run-1")
        assert (await stream.next())["type"] == "run.state"
    for query, field in (
        ("?type=run,nope", "type"),
        ("?last_event_id=abc", "last_event_id"),
        ("?runs=x", "runs"),
        ("?run=" + "x" * 200, "run"),
    ):
        status, body = await api.call("GET", f"/events{query}")
        assert status == 422 and body["detail"].startswith(f"{field}:"), (query, body)
    status, body = await api.call("GET", "/events", headers={"Last-Event-ID": "-1"})
    assert status == 422 and body["detail"].startswith("Last-Event-ID:"), body
    assert body["errors"][0]["in"] == "header"


async def test_a_slow_client_is_dropped_not_grown(make_api: MakeApi, db_url: str) -> None:
    """The fan-out's queue per client is bounded: a client that does not read is marked dropped
    (its handler then sends `dropped` and closes; the client resumes with Last-Event-ID)."""
    api = await make_api(db_url)
    hub = Hub(api.ctx.sessions, utcnow, poll=0.05, queue_size=10)
    try:
        slow, _ = await hub.subscribe(Filter(), Role.VIEWER, None)
        make_run(api, "run-1", vms=tuple(f"vm{i}" for i in range(20)))
        for _ in range(100):
            if slow.dropped:
                break
            await asyncio.sleep(0.05)
        assert slow.dropped and slow.queue.qsize() == 10
        assert hub.cursor >= 21  # the hub went on for everyone else
    finally:
        await hub.close()


async def test_a_client_that_reconnects_mid_run_sees_every_state_change_once(
    pipeline_factory: Callable[..., Pipeline], make_api: MakeApi
) -> None:
    """A real run on the lab: the client drops after the first VM starts, reconnects with
    Last-Event-ID after more has happened, and has then seen every state change of the run
    exactly once, in order, up to the run's end; `vbm events` prints the same from the log."""
    p = pipeline_factory()
    p.start()
    api = await make_api(f"sqlite:///{p.data / 'vbm.db'}", **FAST)
    job_id = p.create_job("live", ["web", "db"])
    first: list[dict[str, Any]] = []
    async with open_stream(api, f"?job={job_id}") as resp:
        stream = Stream(resp)
        await stream.block(5)
        run_id = await p.run_job(job_id)
        first = await stream.until(lambda e: e["type"] == "task.state" and e["phase"] == "snapshot", 60)
    await p.wait_task(run_id, lambda t: t.phase in ("verify", "done") or t.state in TASK_FINAL, 60)
    async with open_stream(api, f"?job={job_id}", {"Last-Event-ID": str(first[-1]["id"])}) as resp:
        rest = await Stream(resp).until(lambda e: e["type"] == "run.state" and e["state"] in RUN_FINAL, 90)
    seen = [e["id"] for e in first + rest]
    with api.ctx.sessions() as s:
        logged = list(
            s.scalars(
                select(EventRow.id)
                .where(EventRow.job_id == job_id, EventRow.id <= seen[-1])
                .order_by(EventRow.id)
            )
        )
    assert seen == logged  # every one, once, in order
    assert rest[-1]["state"] == "succeeded" and rest[-1]["run_id"] == run_id
    states = [(e["vm_name"], e["phase"]) for e in first + rest if e["type"] == "task.state"]
    for vm in ("web", "db"):
        phases = [ph for name, ph in states if name == vm]
        assert phases[0] == "queued" and phases[-1] == "done", (vm, phases)
        assert {"snapshot", "downloading", "verifying"} <= set(phases), (vm, phases)
    out, err, code = await p.cli("events", "--once", "--after", "0", "--json", "--job", job_id)
    assert code == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert [e["id"] for e in printed][: len(logged)] == logged
    out, err, code = await p.cli("events", "--once", "--after", "0", "--type", "run", "--run", run_id)
    assert code == 0 and f"run.state {run_id}" in out and "(succeeded)" in out, (out, err)
    out, err, code = await p.cli("events", "--type", "bogus")
    assert code == 2 and "--type: unknown type bogus" in err


async def test_a_restore_has_its_phases_and_progress(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, **FAST)
    now = utcnow()
    async with open_stream(api, "?restore=restore-1") as resp:
        stream = Stream(resp)
        await stream.block(5)
        make_run(api, "run-1")  # not about the restore: filtered out
        with api.ctx.sessions.begin() as s:
            s.add(Restore(id="restore-1", restore_point_id="rp-1", repository="/x", vcenter="lab",
                          mode="new_vm", target={"name": "web-restored"}, state="queued", phase="queued",
                          created_at=now, updated_at=now))  # fmt: skip
        with api.ctx.sessions.begin() as s:
            row = s.get(Restore, "restore-1")
            assert row is not None
            row.state, row.phase = "running", "checking"
        with api.ctx.sessions.begin() as s:
            row = s.get(Restore, "restore-1")
            assert row is not None
            row.phase, row.bytes_total, row.bytes_done, row.rate = "uploading", 1000, 250, 50.0
        events: list[dict[str, Any]] = []
        samples: list[dict[str, Any]] = []
        while len(events) < 3 or not any(p["phase"] == "writing" for p in samples):
            event = await stream.next(skip_progress=False)  # a sample may come before a state change
            (samples if event["type"] == "progress" else events).append(event)
        assert [(e["type"], e["state"], e["phase"], e["vbm_phase"]) for e in events] == [
            ("restore.state", "queued", "queued", "queued"),
            ("restore.state", "running", "connecting", "checking"),
            ("restore.state", "running", "writing", "uploading"),
        ]
        assert (samples[-1]["restore_id"], samples[-1]["vm_name"], samples[-1]["eta_s"]) == (
            "restore-1", "web-restored", 15.0,
        )  # fmt: skip
