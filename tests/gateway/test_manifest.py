"""GET /api/v1/backups/{id}/manifest.json on a real repository: every file with its SHA-256, a
disk's SHA-256 null with the reason until it is computed, 404/503 that say what is wrong, and a
viewer may read it. (On the lab with sha256sum: tests/pipeline/test_manifest_sha256.py.)"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from services.gateway.answers.runs import ManifestJson
from shared.catalog import apikeys
from shared.catalog.points import record_restore_point
from shared.clock import utcnow
from shared.db.models import RestorePointRow
from shared.model.access import Role
from shared.repo import FileEntry, LocalBackend, Repository, Writer, restore_point
from shared.repo import digests as sha
from tests.gateway.conftest import MakeApi
from tests.repo.conftest import BytesSource, make_image

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
CS = 64 * 1024


async def test_manifest_json(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    repo = await Repository.init(LocalBackend(tmp_path / "repo"), chunk_size=CS)
    writer = Writer(repo, workers=3)
    data = make_image(10 * CS + 512, seed=7)
    vmx = b'displayName = "web"\n' * 50
    digest = sha.OrderedSha256(len(data), CS)
    try:
        disk, _ = await writer.write_disk(
            BytesSource(data), key=2000, capacity=len(data), file="web/web-flat.vmdk", change_id="52 a/1",
            sha256=digest,
        )  # fmt: skip
        vmx_entry, _ = await writer.write_file("web/web.vmx", vmx)
    finally:
        writer.close()
    flat = FileEntry(path="web/web-flat.vmdk", size=len(data), disk_key=2000)
    rp = restore_point(
        vm_name="web", started=T0, finished=T0, disks=[disk], files=[flat, vmx_entry],
        vcenter="vc1", vm_moref="vm-1", snapshot_name="vbm-backup", run_id="run-1",
    )  # fmt: skip
    await repo.commit(rp)
    hexdigest = digest.hexdigest()
    assert hexdigest == hashlib.sha256(data).hexdigest()
    entry = {"file": disk.file, "size_bytes": len(data), "sha256": hexdigest, "by": "mover", "why": None}
    with api.ctx.sessions.begin() as s:
        record_restore_point(
            s, rp, task_id="t1", run_id="run-1", vcenter="vc1", vm_moref="vm-1", vm_name="web",
            repository=str(tmp_path / "repo"), bytes_read=0, bytes_stored=0, sha256={"2000": entry},
        )  # fmt: skip

    status, body = await api.call("GET", f"/backups/{rp.id}/manifest.json")
    assert status == 200, body
    assert (body["vm_name"], body["vcenter"], body["snapshot"]) == ("web", "vc1", "vbm-backup")
    assert body["started"].startswith("2026-12-06T09:00:00")
    assert body["files"] == [
        {"path": "web/web-flat.vmdk", "size_bytes": len(data), "sha256": hexdigest},
        {"path": "web/web.vmx", "size_bytes": len(vmx), "sha256": hashlib.sha256(vmx).hexdigest()},
    ]
    (d,) = body["vbm"]["disks"]
    assert (d["key"], d["change_id"], d["blake3_tree"], d["sha256_by"]) == (
        2000,
        "52 a/1",
        disk.tree,
        "mover",
    )
    assert body["vbm"]["restore_point"] == rp.id and body["vbm"]["chunk_hash"] == "blake3"
    ManifestJson.model_validate(body)

    # not computed yet (an incremental before verification): null, and why
    with api.ctx.sessions.begin() as s:
        row = s.get(RestorePointRow, rp.id)
        assert row is not None
        row.sha256 = {"2000": {**entry, "sha256": None, "by": None, "why": sha.INCREMENTAL}}
    status, body = await api.call("GET", f"/backups/{rp.id}/manifest.json")
    missing = {"sha256": None, "sha256_missing": sha.INCREMENTAL}
    assert body["files"][0] == {"path": "web/web-flat.vmdk", "size_bytes": len(data), **missing}
    ManifestJson.model_validate(body)
    # ... unless the repository's object next to the manifest has it
    assert await sha.write_sums(repo, rp.id, {"2000": entry})
    status, body = await api.call("GET", f"/backups/{rp.id}/manifest.json")
    assert body["files"][0]["sha256"] == hexdigest and body["vbm"]["sha256_object"] == sha.sums_key(rp.id)

    # a viewer may read it
    with api.ctx.sessions.begin() as s:
        viewer = apikeys.create(s, "ro", utcnow(), role=Role.VIEWER)[1]
    status, _ = await api.call("GET", f"/backups/{rp.id}/manifest.json", headers={apikeys.HEADER: viewer})
    assert status == 200

    # unknown id: 404 naming it; catalogued but gone from the repository: 404 saying so
    status, body = await api.call("GET", "/backups/rp-20990101T000000Z-00000000/manifest.json")
    assert status == 404 and body["detail"] == "no restore point 'rp-20990101T000000Z-00000000'"
    await repo.forget(rp.id)
    status, body = await api.call("GET", f"/backups/{rp.id}/manifest.json")
    assert status == 404 and "in the catalog but not in" in body["detail"]
    # the repository cannot be opened: 503 naming it
    with api.ctx.sessions.begin() as s:
        row = s.get(RestorePointRow, rp.id)
        assert row is not None
        row.repository = str(tmp_path / "nowhere")
    status, body = await api.call("GET", f"/backups/{rp.id}/manifest.json")
    assert status == 503 and "nowhere" in body["detail"], body
    # no key: 401
    async with api.client.get(f"/api/v1/backups/{rp.id}/manifest.json") as resp:
        assert resp.status == 401
