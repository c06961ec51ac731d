"""The whole pipeline on an S3 repository (SeaweedFS): full, CBT incremental, verify, restore."""

from __future__ import annotations

from collections.abc import Callable

from shared.repo import Repository, read_disk
from shared.repo.s3 import S3Backend
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_restore import folder, restore, wait_restore
from tests.plugins.s3 import S3Server


async def test_full_and_incremental_to_s3_verify_and_restore(
    pipeline_factory: Callable[..., Pipeline], s3_server: S3Server, s3_bucket: str
) -> None:
    p = pipeline_factory(VBM_S3__ACCESS_KEY=s3_server.access_key, VBM_S3__SECRET_KEY=s3_server.secret_key)
    location = f"s3://{s3_server.endpoint}/{s3_bucket}/vbm?tls=false"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("s3", ["web"], repository=location)
    content = {k: p.guest_disk("web", k) for k in (2000, 2001)}
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (full,) = p.restore_points(run)
    assert full.repository == location

    client = s3_server.client()

    def chunks() -> set[str]:
        return {o.object_name for o in client.list_objects(s3_bucket, prefix="vbm/chunks/", recursive=True)}

    before = chunks()
    assert before and not (p.repo_dir / "config").exists()  # nothing went to the local default

    p.lab.guest_write("web", 2000, 5 * 1024 * 1024, b"after the full" * 100)  # one 4 MiB window
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (incr,) = p.restore_points(run2)
    assert len(chunks() - before) == 1  # only the changed window was sent
    later = p.guest_disk("web", 2000)

    backend = S3Backend(location, s3_server.access_key, s3_server.secret_key)
    repo = await Repository.open(backend)
    for rp_id, disk0 in ((full.id, content[2000]), (incr.id, later)):
        rp = await repo.load(rp_id)
        assert b"".join([x async for x in read_disk(repo, rp, rp.disk(2000))]) == disk0
    await backend.close()
    with p.sessions() as s:
        from shared.db.models import RestorePointRow

        rows = {r.id: r for r in s.query(RestorePointRow).all()}
    assert rows[full.id].verify_state == rows[incr.id].verify_state == "ok"

    done = await wait_restore(
        p, await restore(p, restore_point_id=incr.id, name="web-s3", datastore="LocalDS_0")
    )
    assert done.state == "succeeded", (done.error, p.logs())
    assert (folder(p, "web-s3") / "web-s3-flat.vmdk").read_bytes() == later
    assert (folder(p, "web-s3") / "web-s3_1-flat.vmdk").read_bytes() == content[2001]
    p.assert_clean()
