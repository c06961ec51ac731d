"""/api/v1/runs and /api/v1/backups: filters, paging, tasks with ETA, the catalog and manifests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from services.gateway.answers import runs as answers
from shared.catalog import runlog
from shared.catalog.jobs import job_row
from shared.db.models import RestorePointRow, Run, Task
from shared.db.usage import UsageSample
from shared.model.jobs import JobSpec, VMRef
from shared.repo import DiskEntry, LocalBackend, Repository, restore_point
from tests.gateway.conftest import Api, MakeApi

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def seed_extra_run(api: Api) -> None:
    with api.ctx.sessions.begin() as s:
        s.add(
            Run(
                id="job-b-r9",
                job_id="job-b",
                trigger="api",
                state="queued",
                created_at=T0 + timedelta(hours=1),
            )
        )


def seed_runs(api: Api) -> None:
    """Jobs a (4 runs) and b (1 run); the newest run of a is running with two tasks."""
    with api.ctx.sessions.begin() as s:
        for job_id in ("job-a", "job-b"):
            spec = JobSpec(name=job_id, vcenter="lab", vms=(VMRef(moref="vm-1", name="vm1"),))
            s.add(job_row(spec, job_id, T0, "/repo"))
        s.flush()
        states = ["succeeded", "failed", "succeeded", "running"]
        for i, state in enumerate(states):
            s.add(
                Run(
                    id=f"job-a-r{i}",
                    job_id="job-a",
                    trigger="schedule",
                    state=state,
                    created_at=T0 + timedelta(minutes=i),
                )
            )
        s.add(
            Run(
                id="job-b-r0",
                job_id="job-b",
                trigger="api",
                state="queued",
                created_at=T0 - timedelta(minutes=1),
            )
        )
        s.flush()
        for vm, done, rate, finished in (("vm1", 512 << 20, 0.0, T0), ("vm2", 256 << 20, 64 << 20, None)):
            s.add(
                Task(
                    id=f"job-a-r3.{vm}", run_id="job-a-r3", vcenter="lab", vm_moref=f"vm-{vm}", vm_name=vm,
                    phase="transfer", state="running", bytes_done=done, bytes_total=512 << 20, rate=rate,
                    created_at=T0, updated_at=T0, finished_at=finished,
                )
            )  # fmt: skip


async def test_runs_filters_paging_and_detail(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url)
    seed_runs(api)
    status, page = await api.call("GET", "/runs?limit=2")
    assert status == 200 and (page["total"], page["limit"], page["offset"]) == (5, 2, 0)
    answers.RunPage.model_validate(page)
    assert [r["id"] for r in page["runs"]] == ["job-a-r3", "job-a-r2"]
    page = (await api.call("GET", "/runs?limit=2&offset=4"))[1]
    assert [r["id"] for r in page["runs"]] == ["job-b-r0"] and page["total"] == 5
    page = (await api.call("GET", "/runs?job_id=job-a&state=succeeded"))[1]
    assert [r["id"] for r in page["runs"]] == ["job-a-r2", "job-a-r0"] and page["total"] == 2
    assert (await api.call("GET", "/runs?state=cancelled"))[1]["total"] == 0

    for query, detail in [
        ("limit=0", "limit: '0' is not a whole number from 1 to 500"),
        ("offset=x", "offset: 'x' is not"),
        ("jobid=job-a", "jobid: unknown query parameter (known: "),
        ("cursor=nonsense", "cursor: is not a cursor this list gave"),
        ("since=yesterday", "since: 'yesterday' is not an ISO 8601 time"),
        ("order=up", "order: 'up' is neither asc nor desc"),
        ("since=2026-11-27T00:00:00Z&until=2026-11-26T00:00:00Z", "until: must be later than since"),
    ]:
        status, problem = await api.call("GET", f"/runs?{query}")
        assert status == 422 and problem["detail"].startswith(detail), problem
        assert problem["errors"][0]["in"] == "query"

    # a cursor walk sees every run once, also when runs are added while it walks
    seen: list[str] = []
    status, page = await api.call("GET", "/runs?limit=2")
    while True:
        seen += [r["id"] for r in page["runs"]]
        if len(seen) == 2:
            seed_extra_run(api)  # newer than every run seen: it is not on the pages to come
        if page["next_cursor"] is None:
            break
        status, page = await api.call("GET", f"/runs?limit=2&cursor={page['next_cursor']}")
        assert status == 200, page
    assert seen == ["job-a-r3", "job-a-r2", "job-a-r1", "job-a-r0", "job-b-r0"], seen
    status, problem = await api.call("GET", f"/runs?limit=2&offset=2&cursor={page['next_cursor'] or 'x'}")
    assert status == 422
    oldest = (await api.call("GET", "/runs?order=asc&limit=1"))[1]
    assert [r["id"] for r in oldest["runs"]] == [seen[-1]] and oldest["total"] == 6

    status, run = await api.call("GET", "/runs/job-a-r3")
    assert status == 200 and run["state"] == "running" and not run["finished"]
    answers.RunDetail.model_validate(run)
    with api.ctx.sessions.begin() as s:
        runlog.write(s, "job-a-r3", "vm2 is being read", T0, task_id="job-a-r3.vm2")
    log = answers.RunLog.model_validate((await api.call("GET", "/runs/job-a-r3/log"))[1])
    assert [line.message for line in log.lines] == ["vm2 is being read"]
    tasks = {t["vm_name"]: t for t in run["tasks"]}
    assert tasks["vm2"]["eta_s"] == 4.0 and tasks["vm2"]["bytes_done"] == 256 << 20
    assert tasks["vm1"]["eta_s"] is None and tasks["vm1"]["finished_at"] == "2026-11-26T09:00:00Z"
    status, problem = await api.call("GET", "/runs/nope-1")
    assert status == 404 and problem["detail"] == "no run 'nope-1'"


async def test_backups_catalog_and_manifest(make_api: MakeApi, db_url: str, tmp_path: Path) -> None:
    api = await make_api(db_url)
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    repo = await Repository.init(LocalBackend(repo_dir))
    empty = DiskEntry(
        key=2000, file="vm1/vm1-flat.vmdk", capacity=0, chunk_size=repo.chunk_size, chunks=(),
        tree="0" * 64, stored_windows=0,
    )  # fmt: skip
    rp = restore_point(vm_name="vm1", started=T0, finished=T0, disks=[empty], job_id="job-a", vm_moref="vm-1")
    await repo.commit(rp)
    with api.ctx.sessions.begin() as s:
        for i, (rp_id, vm, job, where) in enumerate(
            [
                (rp.id, "vm1", "job-a", repo_dir),
                ("rp-20261126T100000Z-00000002", "vm2", "job-b", tmp_path / "gone"),
            ]
        ):
            s.add(
                RestorePointRow(
                    id=rp_id, job_id=job, vcenter="lab", vm_moref=f"vm-{i + 1}", vm_name=vm,
                    repository=str(where), kind="full", disks=[{"key": 2000}], logical_bytes=0,
                    bytes_read=0, bytes_stored=0, started_at=T0, finished_at=T0 + timedelta(hours=i),
                    verify_problems=[],
                )
            )  # fmt: skip

    status, page = await api.call("GET", "/backups")
    assert status == 200 and page["total"] == 2
    answers.BackupPage.model_validate(page)
    assert [b["vm_name"] for b in page["backups"]] == ["vm2", "vm1"]
    assert [b["id"] for b in (await api.call("GET", "/backups?vm=vm-1"))[1]["backups"]] == [rp.id]
    assert [b["id"] for b in (await api.call("GET", "/backups?job=job-b&limit=1"))[1]["backups"]] == [
        "rp-20261126T100000Z-00000002"
    ]
    assert (await api.call("GET", "/backups?limit=1&offset=1"))[1]["backups"][0]["id"] == rp.id

    status, detail = await api.call("GET", f"/backups/{rp.id}")
    assert status == 200 and detail["manifest"]["id"] == rp.id and detail["manifest_error"] is None
    assert detail["manifest"]["disks"][0]["key"] == 2000
    answers.BackupDetail.model_validate(detail)
    status, detail = await api.call("GET", "/backups/rp-20261126T100000Z-00000002")
    assert status == 200 and detail["manifest"] is None and "not a vbm repository" in detail["manifest_error"]
    answers.BackupDetail.model_validate(detail)
    status, problem = await api.call("GET", "/backups/rp-nope")
    assert status == 404 and problem["detail"] == "no restore point 'rp-nope'"


async def _one_point(api: Api, tmp_path: Path, image: bytes, vm_name: str = "vm1") -> tuple[str, Path]:
    """A restore point with one disk holding `image`, in a real repository and the catalog."""
    from shared.repo import Writer

    repo_dir = tmp_path / "repo"
    repo = await Repository.init(LocalBackend(repo_dir), chunk_size=64 * 1024)

    class Source:
        async def read(self, offset: int, length: int) -> bytes:
            return image[offset : offset + length]

    writer = Writer(repo)
    try:
        disk, _ = await writer.write_disk(Source(), key=2000, capacity=len(image), file="vm1/vm1-flat.vmdk")
    finally:
        writer.close()
    rp = restore_point(vm_name=vm_name, started=T0, finished=T0, disks=[disk], vm_moref="vm-1")
    await repo.commit(rp)
    with api.ctx.sessions.begin() as s:
        s.add(
            RestorePointRow(
                id=rp.id, vcenter="lab", vm_moref="vm-1", vm_name=vm_name, repository=str(repo_dir),
                kind="full", disks=[{"key": 2000, "capacity": len(image)}], logical_bytes=len(image),
                bytes_read=0, bytes_stored=0, started_at=T0, finished_at=T0, verify_problems=[],
            )
        )  # fmt: skip
    return rp.id, repo_dir


async def test_disk_download_with_ranges(make_api: MakeApi, tmp_path: Path) -> None:
    import os

    from shared.repo.repository import chunk_key

    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    image = os.urandom(200 * 1024) + bytes(128 * 1024) + os.urandom(1000)
    rp_id, repo_dir = await _one_point(api, tmp_path, image)
    url = f"/api/v1/backups/{rp_id}/disks"

    async with api.client.get(f"{url}/2000", headers=api.auth) as resp:
        assert resp.status == 200 and resp.headers["Accept-Ranges"] == "bytes"
        assert int(resp.headers["Content-Length"]) == len(image)
        assert await resp.read() == image
    async with api.client.get(f"{url}/0", headers={**api.auth, "Range": "bytes=65530-65545"}) as resp:
        assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes 65530-65545/{len(image)}"
        assert await resp.read() == image[65530:65546]
    async with api.client.get(f"{url}/0", headers={**api.auth, "Range": "bytes=-100"}) as resp:
        assert resp.status == 206 and await resp.read() == image[-100:]
    async with api.client.head(f"{url}/2000", headers=api.auth) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(image)
    async with api.client.get(f"{url}/0", headers={**api.auth, "Range": f"bytes={len(image)}-"}) as resp:
        assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(image)}"
        assert "outside the disk" in (await resp.json())["detail"]
    status, problem = await api.call("GET", f"/backups/{rp_id}/disks/7")
    assert status == 404 and "has no disk 7" in problem["detail"]
    status, problem = await api.call("GET", "/backups/rp-nope/disks/0")
    assert status == 404 and problem["detail"] == "no restore point 'rp-nope'"

    # a damaged chunk ends the stream short: the client never gets wrong bytes as complete
    repo = await Repository.open(LocalBackend(repo_dir))
    victim = next(c for c in (await repo.load(rp_id)).disk(2000).chunks if isinstance(c, str))
    (repo_dir / chunk_key(victim)).write_bytes(b"garbage")
    async with api.client.get(f"{url}/2000", headers=api.auth) as resp:
        got = b""
        try:
            got = await resp.read()
        except Exception:  # the connection is dropped mid-body
            got = b""
        assert len(got) < len(image)


async def test_verify_request_is_queued(make_api: MakeApi, tmp_path: Path) -> None:
    from sqlalchemy import select

    from shared.db.models import Outbox

    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    rp_id, _ = await _one_point(api, tmp_path, b"x" * 1000)
    status, body = await api.call("POST", f"/backups/{rp_id}/verify")
    assert status == 202 and body["status"] == "queued" and body["request_id"].startswith("verify-")
    answers.VerifyQueued.model_validate(body)
    with api.ctx.sessions() as s:
        row = s.get(RestorePointRow, rp_id)
        assert row is not None and row.verify_requested_at is not None
        staged = [o for o in s.scalars(select(Outbox)) if o.subject == "vbm.verify.requested"]
        assert len(staged) == 1 and body["request_id"] in staged[0].payload
    status, detail = await api.call("GET", f"/backups/{rp_id}")
    assert detail["verify_requested_at"] is not None and detail["verify_state"] == "pending"
    status, problem = await api.call("POST", "/backups/rp-nope/verify")
    assert status == 404 and problem["detail"] == "no restore point 'rp-nope'"


async def test_prune_preview_and_repository_usage(make_api: MakeApi, tmp_path: Path) -> None:
    import os

    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    rp_id, repo_dir = await _one_point(api, tmp_path, os.urandom(100 * 1024))
    status, body = await api.call("GET", "/prune?vm=vm1")
    assert status == 200
    assert [(p["id"], p["action"]) for p in body["restore_points"]] == [(rp_id, "keep")]
    assert body["restore_points"][0]["rule"] == "keep-last"  # the default policy: keep_last 14
    # no schedule: expected to go after 14 more daily backups
    assert body["restore_points"][0]["expires_at"].startswith("2026-")
    answers.PrunePreview.model_validate(body)
    status, body = await api.call("GET", "/repositories")  # not measured yet: nothing written
    assert status == 200 and body["repositories"][0]["sampled_at"] is None
    answers.Repositories.model_validate(body)
    with api.ctx.sessions() as s:
        assert s.scalars(select(UsageSample)).first() is None
    status, body = await api.call("POST", "/repositories/measure")
    assert status == 200
    answers.Measured.model_validate(body)
    (repo,) = body["repositories"]
    assert repo["repository"] == str(repo_dir) and repo["restore_points"] == 1
    assert repo["stored"] > 100 * 1024 and repo["logical"] == 100 * 1024 and repo["total"] > 0
    assert repo["samples"][0]["stored"] == repo["stored"]
    assert repo["dedup_ratio"] == 1.0 and 0.9 < repo["compression_ratio"] <= 1.0  # random data
    status, body = await api.call("GET", "/repositories")  # the latest sample
    (stored,) = answers.Repositories.model_validate(body).model_dump()["repositories"]
    kept = ("stored", "logical", "total", "samples", "dedup_ratio", "compression_ratio")
    assert {k: stored[k] for k in kept} == {k: repo[k] for k in kept}
    status, body = await api.call("POST", "/gc?dry_run=true")
    assert status == 200 and body["repositories"][0]["chunks_removed"] == 0
    answers.GCDone.model_validate(body)
    status, body = await api.call("POST", "/prune?vm=nobody")
    assert status == 200 and answers.PruneDone.model_validate(body).removed == []


async def test_pin_and_unpin(make_api: MakeApi, tmp_path: Path) -> None:
    from shared.db.models import RestorePointRow as Row

    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    rp_id, _ = await _one_point(api, tmp_path, b"y" * 5000)
    status, body = await api.call("POST", f"/backups/{rp_id}/pin")
    assert status == 200 and body["pinned"] is True
    answers.BackupAnswer.model_validate(body)
    with api.ctx.sessions.begin() as s:  # an older point of the same VM that retention would remove
        s.add(
            Row(
                id="rp-20261120T090000Z-00000009", vcenter="lab", vm_moref="vm-1", vm_name="vm1",
                repository=str(tmp_path / "repo"), kind="full", disks=[], logical_bytes=0, bytes_read=0,
                bytes_stored=0, started_at=T0 - timedelta(days=6), finished_at=T0 - timedelta(days=6),
                verify_problems=[], pinned=True,
            )
        )  # fmt: skip
    status, body = await api.call("GET", "/prune?vm=vm1")
    rules = {p["id"]: p["rule"] for p in body["restore_points"]}
    assert rules["rp-20261120T090000Z-00000009"] in ("keep-last", "pinned")
    status, body = await api.call("POST", f"/backups/{rp_id}/unpin")
    assert status == 200 and body["pinned"] is False
    status, _ = await api.call("POST", "/backups/rp-nope/pin")
    assert status == 404


async def test_replications_are_listed_and_filtered(make_api: MakeApi, db_url: str) -> None:
    from shared.catalog import replication
    from shared.db.models import Replication

    api = await make_api(db_url)
    with api.ctx.sessions.begin() as s:
        for rp_id, target in (("rp-a", "s3://h/b"), ("rp-a", "azure://acct/c"), ("rp-b", "s3://h/b")):
            replication.request(s, rp_id, target, T0)
        done = s.get(Replication, replication.replication_id("rp-a", "s3://h/b"))
        assert done is not None
        done.state, done.chunks_sent, done.bytes_sent, done.finished_at = "done", 7, 7000, T0
        replication.request(s, "rp-a", "s3://h/b", T0)  # asked again: the same one
    status, body = await api.call("GET", "/replications")
    assert status == 200 and body["total"] == 3
    answers.ReplicationPage.model_validate(body)
    # a cursor walk sees each copy once, in a stable order (their times tie: by id)
    seen: list[str] = []
    status, page = await api.call("GET", "/replications?limit=2&order=asc")
    while True:
        assert status == 200, page
        seen += [r["id"] for r in page["replications"]]
        if page["next_cursor"] is None:
            break
        status, page = await api.call("GET", f"/replications?limit=2&order=asc&cursor={page['next_cursor']}")
    assert seen == sorted(r["id"] for r in body["replications"])
    status, page = await api.call("GET", "/replications?since=2026-11-26T09:00:01Z")
    assert status == 200 and page["total"] == 0
    status, problem = await api.call("GET", "/replications?rp=rp-a")
    assert status == 422 and problem["detail"].startswith("rp: unknown query parameter")
    status, body = await api.call("GET", "/replications?state=done")
    assert [(r["restore_point_id"], r["target"], r["bytes_sent"]) for r in body["replications"]] == [
        ("rp-a", "s3://h/b", 7000)
    ]
    status, body = await api.call("GET", "/replications?restore_point=rp-b")
    assert [r["state"] for r in body["replications"]] == ["pending"]
    status, problem = await api.call("GET", "/replications?state=lost")
    assert status == 422 and problem["detail"].startswith("state: 'lost' is not pending")
