"""/api/v1/jobs against the lab: create, validate, replace, delete, run now, cancel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lab.launcher import Lab
from services.gateway.answers import jobs as answers
from shared.contracts import JOBS_CHANGED_SUBJECT, JobRequested, cancel_subject
from shared.db.models import Job, Outbox, Replication, RestorePointRow, Run
from tests.gateway.conftest import Api, MakeApi, lab_vcenter
from tests.plugins.s3 import S3Server


def body(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "nightly",
        "vcenter": "lab",
        "vms": [{"name": "vm1"}, {"name": "vm2"}],
        "schedule": {"kind": "preset", "preset": "daily", "at": "02:30"},
    }
    return {**spec, **changes}


async def make(api: Api, **changes: Any) -> dict[str, Any]:
    status, job = await api.call("POST", "/jobs", json=body(**changes))
    assert status == 201, job
    return dict(job)


def jobs_in_db(api: Api) -> list[tuple[str, str, Any]]:
    with api.ctx.sessions() as s:
        return [(j.id, j.name, j.vms) for j in s.query(Job).order_by(Job.name)]


async def test_create_list_get_and_reject_bad_input(make_api: MakeApi, db_url: str, lab: Lab) -> None:
    api = await make_api(db_url, (lab_vcenter(lab),))
    async with api.client.post("/api/v1/jobs", json=body(), headers=api.auth) as resp:
        assert resp.status == 201
        job = await resp.json()
        assert resp.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    vm1, vm2 = lab.vm("vm1")["moref"], lab.vm("vm2")["moref"]
    assert job["vms"] == [{"moref": vm1, "name": "vm1"}, {"moref": vm2, "name": "vm2"}]
    assert job["schedule"]["preset"] == "daily" and job["options"]["cbt"] is True
    assert job["repository"] == api.ctx.settings.repository_location
    answers.Job.model_validate(job)

    by_moref = await make(api, name="by-moref", vms=[{"moref": vm2}], schedule=None)
    assert by_moref["vms"] == [{"moref": vm2, "name": "vm2"}]
    status, listed = await api.call("GET", "/jobs")
    assert status == 200 and [j["name"] for j in listed["jobs"]] == ["by-moref", "nightly"]
    answers.Jobs.model_validate(listed)
    status, preview = await api.call("POST", "/jobs/preview", json=body(name="x", select=[{"name": "vm*"}]))
    assert status == 200 and [v["name"] for v in preview["vms"]] == ["vm1", "vm2"], preview
    answers.Preview.model_validate(preview)
    status, preview = await api.call("GET", f"/jobs/{by_moref['id']}/preview")
    assert status == 200 and answers.Preview.model_validate(preview).total == 1
    assert (await api.call("GET", f"/jobs/{job['id']}"))[1] == job
    assert (await api.call("GET", "/jobs/nightly"))[1]["id"] == job["id"]

    before = jobs_in_db(api)
    bad: list[tuple[Any, int, str]] = [
        (body(), 409, f"a job named 'nightly' exists already ({job['id']})"),
        (body(name="x", vcenter="nope"), 422, "vcenter: unknown vCenter 'nope' (configured: lab)"),
        (body(name="x", vms=[{"name": "vm1"}, {"name": "ghost"}]), 422, "vms.1.name: no VM named 'ghost'"),
        (body(name="x", vms=[{"moref": "vm-99999"}]), 422, "vms.0.moref: no VM vm-99999 on vCenter lab"),
        (body(name="x", vms=[{"moref": "vm 1"}]), 422, "vms.0.moref: String should match pattern"),
        (body(name="x", vms=[{"name": "vm1"}, {"moref": vm1}]), 422, "vms.1: VM vm1"),
        (body(name="x", vms=[]), 422, "(body): Value error, a job needs VMs: list them (vms) or select them"),
        (body(name="x", colour="red"), 422, "colour: Extra inputs are not permitted"),
        (body(name="x", schedule={"kind": "cron", "cron": "61 * * * *"}), 422, "schedule: Value error"),
        ([1, 2], 422, "(body): Input should be a valid dictionary"),
        (body(name="x", repository="ftp://h/r"), 422, "repository: Value error, ftp:// is not a supported"),
        (
            body(name="x", repository="s3://host"),
            422,
            "repository: Value error, 's3://host' is not an S3 location",
        ),
        (
            body(name="x", repository="s3://k:s@h/b"),
            422,
            "repository: Value error, an S3 location carries no",
        ),
    ]
    for sent, status_wanted, detail in bad:
        status, problem = await api.call("POST", "/jobs", json=sent)
        assert status == status_wanted and problem["detail"].startswith(detail), (sent, problem)
        assert problem["status"] == status_wanted and problem["title"]
    async with api.client.post("/api/v1/jobs", data=b"{nope", headers=api.auth) as resp:
        assert resp.status == 400 and (await resp.json())["detail"].startswith("body is not valid JSON: ")
    status, problem = await api.call("GET", "/jobs/job-missing")
    assert status == 404 and "'job-missing'" in problem["detail"]
    assert jobs_in_db(api) == before


async def test_replace_and_delete(make_api: MakeApi, db_url: str, lab: Lab) -> None:
    api = await make_api(db_url, (lab_vcenter(lab),))
    changed = await api.ctx.bus.nc.subscribe(JOBS_CHANGED_SUBJECT)  # the scheduler's wake-up call
    job = await make(api)
    other = await make(api, name="other", vms=[{"name": "vm2"}])
    for _ in range(2):
        await changed.next_msg(timeout=5)
    status, replaced = await api.call(
        "PUT",
        f"/jobs/{job['id']}",
        json=body(vms=[{"name": "vm2"}], options={"quiesce": True}, schedule=None),
    )
    assert status == 200, replaced
    assert replaced["id"] == job["id"] and replaced["created_at"] == job["created_at"]
    assert replaced["vms"] == [{"moref": lab.vm("vm2")["moref"], "name": "vm2"}]
    assert replaced["schedule"] is None and replaced["options"]["quiesce"] is True
    answers.Job.model_validate(replaced)

    before = jobs_in_db(api)
    status, problem = await api.call("PUT", f"/jobs/{job['id']}", json=body(name="other"))
    assert status == 409 and other["id"] in problem["detail"]
    status, problem = await api.call("PUT", f"/jobs/{job['id']}", json=body(vms=[{"name": "ghost"}]))
    assert status == 422 and problem["detail"].startswith("vms.0.name")
    assert (await api.call("PUT", "/jobs/job-nope", json=body()))[0] == 404
    assert jobs_in_db(api) == before

    status, gone = await api.call("DELETE", f"/jobs/{other['id']}")
    assert status == 200 and gone == {"deleted": other["id"], "cancelled_runs": []}
    answers.JobDeleted.model_validate(gone)
    for _ in range(2):  # the replace, the delete
        await changed.next_msg(timeout=5)
    await changed.unsubscribe()
    assert (await api.call("GET", f"/jobs/{other['id']}"))[0] == 404
    assert (await api.call("DELETE", f"/jobs/{other['id']}"))[0] == 404
    status, problem = await api.call("DELETE", f"/jobs/{job['id']}?force=maybe")
    assert status == 422 and problem["detail"].startswith("force:")


async def test_run_now_reaches_the_stream_and_cancel_stops_it(
    make_api: MakeApi, db_url: str, lab: Lab
) -> None:
    api = await make_api(db_url, (lab_vcenter(lab),))
    job = await make(api)
    requested = await api.ctx.bus.js.subscribe("vbm.job.requested", ordered_consumer=True)

    async with api.client.post(f"/api/v1/jobs/{job['id']}/run", headers=api.auth) as resp:
        assert resp.status == 202
        started = await resp.json()
        run_id = started["run_id"]
        assert resp.headers["Location"] == f"/api/v1/runs/{run_id}"
    assert started["run"]["state"] == "queued" and started["run"]["trigger"] == "api"
    answers.RunStarted.model_validate(started)
    event = JobRequested.model_validate_json((await requested.next_msg(timeout=5)).data)
    assert (event.run_id, event.job_id, event.trigger) == (run_id, job["id"], "api")
    await requested.unsubscribe()  # an open ordered consumer makes the bus's drain wait 30 s
    assert (await api.call("POST", "/jobs/job-nope/run"))[0] == 404

    with api.ctx.sessions.begin() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.state = "running"
    live = await api.ctx.bus.nc.subscribe(cancel_subject(run_id))
    status, cancelled = await api.call("POST", f"/jobs/{job['id']}/cancel")
    assert status == 202 and cancelled == {"job_id": job["id"], "cancelled_runs": [run_id]}
    answers.JobCancelled.model_validate(cancelled)
    status, run = await api.call("POST", f"/runs/{run_id}/cancel")
    assert status == 202 and answers.Run.model_validate(run).cancel_requested
    assert (await live.next_msg(timeout=5)).data == b""
    await live.unsubscribe()
    with api.ctx.sessions() as s:
        assert s.get(Run, run_id).cancel_requested  # type: ignore[union-attr]

    status, problem = await api.call("DELETE", f"/jobs/{job['id']}")
    assert status == 409 and run_id in problem["detail"] and "force=true" in problem["detail"]
    status, gone = await api.call("DELETE", f"/jobs/{job['id']}?force=true")
    assert status == 200 and gone["cancelled_runs"] == [run_id]
    assert (await api.call("GET", f"/runs/{run_id}"))[0] == 404


async def test_an_immutable_location_on_a_bucket_without_object_lock_is_refused_at_once(
    make_api: MakeApi, db_url: str, lab: Lab, s3_server: S3Server, s3_bucket: str
) -> None:
    api = await make_api(
        db_url,
        (lab_vcenter(lab),),
        s3={"access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
    )
    locked = f"vbm-lock-{uuid.uuid4().hex[:12]}"
    s3_server.client().make_bucket(locked, object_lock=True)
    unlocked = f"s3://{s3_server.endpoint}/{s3_bucket}/copy?tls=false&immutable_days=7"
    status, err = await api.call("POST", "/jobs", json=body(options={"replicate_to": [unlocked]}))
    assert status == 422
    assert (
        err["detail"].startswith("options.replicate_to.0: ")
        and f"bucket {s3_bucket} has no Object Lock" in err["detail"]
    )
    status, err = await api.call("POST", "/jobs", json=body(repository=unlocked))
    assert status == 422 and err["detail"].startswith("repository: ")
    fine = f"s3://{s3_server.endpoint}/{locked}/copy?tls=false&immutable_days=7"
    status, job = await api.call("POST", "/jobs", json=body(options={"replicate_to": [fine]}))
    assert status == 201, job
    assert not list(s3_server.client().list_objects(s3_bucket, recursive=True))  # nothing written


async def test_a_secondary_added_to_a_job_gets_its_earlier_verified_points(
    make_api: MakeApi, db_url: str, lab: Lab, tmp_path: Path
) -> None:
    api = await make_api(db_url, (lab_vcenter(lab),))
    job = await make(api)
    now = datetime.now(UTC)
    with api.ctx.sessions.begin() as s:
        for rp_id, verified in (("rp-a", "ok"), ("rp-b", "ok"), ("rp-c", "failed"), ("rp-d", "pending")):
            s.add(
                RestorePointRow(
                    id=rp_id, job_id=job["id"], vcenter="lab", vm_moref="vm-1", vm_name="vm1",
                    repository=str(tmp_path / "primary"), kind="full", disks=[], logical_bytes=0,
                    bytes_read=0, bytes_stored=0, started_at=now, finished_at=now, verify_state=verified,
                )
            )  # fmt: skip
    offsite = str(tmp_path / "offsite")
    add = body(options={"replicate_to": [offsite]})
    status, replaced = await api.call("PUT", f"/jobs/{job['id']}", json=add)
    assert status == 200, replaced
    with api.ctx.sessions() as s:
        copies = sorted((r.restore_point_id, r.target, r.state) for r in s.scalars(select(Replication)))
        asked = [o.msg_id for o in s.scalars(select(Outbox)) if o.subject == "vbm.replicate.requested"]
    assert copies == [("rp-a", offsite, "pending"), ("rp-b", offsite, "pending")]  # verified ones only
    assert len(asked) == 2
    status, _ = await api.call("PUT", f"/jobs/{job['id']}", json=add)
    with api.ctx.sessions() as s:
        assert len(list(s.scalars(select(Replication)))) == 2  # nothing asked twice


async def test_a_job_runs_once_at_a_time_however_many_ask(make_api: MakeApi, db_url: str, lab: Lab) -> None:
    """50 concurrent requests to run one job: one run, 49 answers naming it (409)."""
    import asyncio

    api = await make_api(db_url, (lab_vcenter(lab),))
    job = await make(api)
    answers = await asyncio.gather(*(api.call("POST", f"/jobs/{job['id']}/run") for _ in range(50)))
    started = [body for status, body in answers if status == 202]
    refused = [body for status, body in answers if status == 409]
    assert len(started) == 1 and len(refused) == 49, [s for s, _ in answers]
    run_id = started[0]["run_id"]
    assert all(run_id in body["detail"] and "has a run in progress" in body["detail"] for body in refused)
    with api.ctx.sessions() as s:
        assert s.query(Run).filter(Run.job_id == job["id"]).count() == 1
