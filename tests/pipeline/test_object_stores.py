"""The whole pipeline on remote repositories (S3 on SeaweedFS, Azure Blob on Azurite, SFTP, rclone
on a WebDAV server):
full, CBT incremental (only the changed window sent), verify, restore."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select

from shared.db.models import RestorePointRow
from shared.repo import Backend, Repository, read_disk
from shared.repo.backends.azure import AzureBackend
from shared.repo.backends.rclone import RcloneBackend
from shared.repo.backends.s3 import S3Backend
from shared.repo.backends.sftp import SFTPBackend
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_restore import folder, restore, wait_restore
from tests.plugins.azurite import AzuriteServer
from tests.plugins.rclone import WebDAVServer
from tests.plugins.s3 import S3Server
from tests.plugins.sftp import SFTPServer


async def test_full_and_incremental_to_s3_verify_and_restore(
    pipeline_factory: Callable[..., Pipeline], s3_server: S3Server, s3_bucket: str
) -> None:
    p = pipeline_factory(VBM_S3__ACCESS_KEY=s3_server.access_key, VBM_S3__SECRET_KEY=s3_server.secret_key)
    location = f"s3://{s3_server.endpoint}/{s3_bucket}/vbm?tls=false"
    client = s3_server.client()

    def chunks() -> set[str]:
        return {
            str(o.object_name) for o in client.list_objects(s3_bucket, prefix="vbm/chunks/", recursive=True)
        }

    await scenario(p, location, chunks, S3Backend(location, s3_server.access_key, s3_server.secret_key))


async def test_full_and_incremental_to_azure_verify_and_restore(
    pipeline_factory: Callable[..., Pipeline], azurite_server: AzuriteServer, azure_container: str
) -> None:
    p = pipeline_factory(VBM_AZURE__ACCOUNT_KEY=azurite_server.key)
    location = f"azure://{azurite_server.account}/{azure_container}/vbm?endpoint={azurite_server.endpoint}"
    container = azurite_server.client().get_container_client(azure_container)

    def chunks() -> set[str]:
        return {b.name for b in container.list_blobs(name_starts_with="vbm/chunks/")}

    await scenario(p, location, chunks, AzureBackend(location, azurite_server.key))


async def test_full_and_incremental_to_sftp_verify_and_restore(
    pipeline_factory: Callable[..., Pipeline], sftp_server: SFTPServer
) -> None:
    p = pipeline_factory(
        VBM_SFTP__KEY_FILE=str(sftp_server.key_file), VBM_SFTP__KNOWN_HOSTS=str(sftp_server.known_hosts)
    )
    path = f"/vbm-{uuid.uuid4().hex[:8]}"
    location = sftp_server.location(path)

    def chunks() -> set[str]:
        return {str(f) for f in (sftp_server.root / path.lstrip("/") / "chunks").rglob("*") if f.is_file()}

    backend = SFTPBackend(
        location, key_file=str(sftp_server.key_file), known_hosts=str(sftp_server.known_hosts)
    )
    await scenario(p, location, chunks, backend)


async def test_full_and_incremental_to_rclone_verify_and_restore(
    pipeline_factory: Callable[..., Pipeline], webdav_server: WebDAVServer
) -> None:
    env = webdav_server.remote_env()
    p = pipeline_factory(**env)  # the services' rclone finds the remote in its environment
    path = f"vbm-{uuid.uuid4().hex[:8]}"
    location = f"rclone://vbmdav/{path}"

    def chunks() -> set[str]:
        return {str(f) for f in (webdav_server.root / path / "chunks").rglob("*") if f.is_file()}

    await scenario(p, location, chunks, RcloneBackend(location, env=env))


async def scenario(p: Pipeline, location: str, chunks: Callable[[], set[str]], backend: Backend) -> None:
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("remote", ["web"], repository=location)
    content = {k: p.guest_disk("web", k) for k in (2000, 2001)}
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (full,) = p.restore_points(run)
    assert full.repository == location
    before = chunks()
    assert before and not (p.repo_dir / "config").exists()  # nothing went to the local default

    p.lab.guest_write("web", 2000, 5 * 1024 * 1024, b"after the full" * 100)  # one 4 MiB window
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (incr,) = p.restore_points(run2)
    assert len(chunks() - before) == 1  # only the changed window was sent
    later = p.guest_disk("web", 2000)

    repo = await Repository.open(backend)
    for rp_id, disk0 in ((full.id, content[2000]), (incr.id, later)):
        rp = await repo.load(rp_id)
        assert b"".join([x async for x in read_disk(repo, rp, rp.disk(2000))]) == disk0
    await backend.close()
    with p.sessions() as s:
        rows = {r.id: r for r in s.scalars(select(RestorePointRow))}
    assert rows[full.id].verify_state == rows[incr.id].verify_state == "ok"

    done = await wait_restore(
        p, await restore(p, restore_point_id=incr.id, name="web-r", datastore="LocalDS_0")
    )
    assert done.state == "succeeded", (done.error, p.logs())
    assert (folder(p, "web-r") / "web-r-flat.vmdk").read_bytes() == later
    assert (folder(p, "web-r") / "web-r_1-flat.vmdk").read_bytes() == content[2001]
    p.assert_clean()
