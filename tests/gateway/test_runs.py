"""/api/v1/runs and /api/v1/backups: filters, paging, tasks with ETA, the catalog and manifests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.db.models import RestorePointRow, Run, Task
from shared.jobs import JobSpec, VMRef, job_row
from shared.repo import DiskEntry, LocalBackend, Repository, restore_point
from tests.gateway.conftest import Api, MakeApi

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


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
    assert [r["id"] for r in page["runs"]] == ["job-a-r3", "job-a-r2"]
    page = (await api.call("GET", "/runs?limit=2&offset=4"))[1]
    assert [r["id"] for r in page["runs"]] == ["job-b-r0"] and page["total"] == 5
    page = (await api.call("GET", "/runs?job_id=job-a&state=succeeded"))[1]
    assert [r["id"] for r in page["runs"]] == ["job-a-r2", "job-a-r0"] and page["total"] == 2
    assert (await api.call("GET", "/runs?state=cancelled"))[1]["total"] == 0

    for query, detail in [
        ("limit=0", "limit: must be between 1 and 500"),
        ("offset=x", "offset: 'x' is not"),
    ]:
        status, problem = await api.call("GET", f"/runs?{query}")
        assert status == 422 and problem["detail"].startswith(detail)

    status, run = await api.call("GET", "/runs/job-a-r3")
    assert status == 200 and run["state"] == "running" and not run["finished"]
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
    assert [b["vm_name"] for b in page["backups"]] == ["vm2", "vm1"]
    assert [b["id"] for b in (await api.call("GET", "/backups?vm=vm-1"))[1]["backups"]] == [rp.id]
    assert [b["id"] for b in (await api.call("GET", "/backups?job=job-b&limit=1"))[1]["backups"]] == [
        "rp-20261126T100000Z-00000002"
    ]
    assert (await api.call("GET", "/backups?limit=1&offset=1"))[1]["backups"][0]["id"] == rp.id

    status, detail = await api.call("GET", f"/backups/{rp.id}")
    assert status == 200 and detail["manifest"]["id"] == rp.id and detail["manifest_error"] is None
    assert detail["manifest"]["disks"][0]["key"] == 2000
    status, detail = await api.call("GET", "/backups/rp-20261126T100000Z-00000002")
    assert status == 200 and detail["manifest"] is None and "not a vbm repository" in detail["manifest_error"]
    status, problem = await api.call("GET", "/backups/rp-nope")
    assert status == 404 and problem["detail"] == "no restore point 'rp-nope'"
