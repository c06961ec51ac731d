"""manifest.json on the lab: the SHA-256 of each disk equals `sha256sum` of the disk as `vbm repo
export` writes it, for a full (hashed by the mover) and an incremental (hashed by the verifier);
the API and `vbm backups manifest` give the same document; 404 for an unknown id; a viewer reads it."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from shared.catalog import apikeys
from shared.clock import utcnow
from shared.db.models import RestorePointRow
from shared.model.access import Role
from shared.repo import LocalBackend, Repository
from shared.repo import digests as sha
from tests.gateway.conftest import Api, MakeApi, make_api  # noqa: F401 - the fixture
from tests.pipeline.conftest import MIB, Pipeline


async def sha256sum_of_export(p: Pipeline, rp_id: str, disk: int) -> str:
    image = p.data / f"{rp_id}-{disk}.img"
    out, err, code = await p.cli(
        "repo", "--repo", str(p.repo_dir), "export", rp_id, "--disk", str(disk), "-o", str(image)
    )
    assert code == 0, (out, err)
    proc = await asyncio.create_subprocess_exec("sha256sum", str(image), stdout=asyncio.subprocess.PIPE)
    line, _ = await proc.communicate()
    assert proc.returncode == 0
    image.unlink()
    return line.decode().split()[0]


async def same_from_api_and_cli(p: Pipeline, api: Api, rp_id: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/backups/{rp_id}/manifest.json")
    assert status == 200, body
    out, err, code = await p.cli("backups", "manifest", rp_id, "--json")
    assert code == 0, err
    assert json.loads(out) == body
    assert isinstance(body, dict)
    return body


def disk_files(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The flat images' entries of `files`, by disk key."""
    by_path = {f["path"]: f for f in doc["files"]}
    return {d["key"]: by_path[d["file"]] for d in doc["vbm"]["disks"]}


async def test_manifest_sha256_matches_sha256sum_of_the_export(
    pipeline_factory: Callable[..., Pipeline],
    make_api: MakeApi,  # noqa: F811
) -> None:
    p = pipeline_factory()
    p.start()
    job = p.create_job("manifest", ["web"])
    run1 = await p.run_job(job)
    assert (await p.wait_run(run1)).state == "succeeded", p.dump(run1)
    (full,) = p.restore_points(run1)
    assert full.kind == "full"
    assert {k: (v["by"], v["why"]) for k, v in (full.sha256 or {}).items()} == {
        "2000": ("mover", None),
        "2001": ("mover", None),
    }
    api = await make_api(f"sqlite:///{p.data / 'vbm.db'}")

    doc = await same_from_api_and_cli(p, api, full.id)
    assert (doc["job_id"], doc["vm_name"], doc["vcenter"]) == (job, "web", "lab")
    assert doc["snapshot"] and doc["started"] and doc["finished"]
    assert doc["vbm"]["restore_point"] == full.id and doc["vbm"]["parent"] is None
    assert [d["key"] for d in doc["vbm"]["disks"]] == [2000, 2001]
    assert all(len(d["blake3_tree"]) == 64 and d["change_id"] for d in doc["vbm"]["disks"])
    flats = disk_files(doc)
    assert len(flats) == 2 and {f["size_bytes"] for f in flats.values()} == {12 * MIB, 5 * MIB + 3072}
    for key, entry in flats.items():
        assert entry["sha256"] == await sha256sum_of_export(p, full.id, key), key
    small = [f for f in doc["files"] if f not in flats.values()]
    assert any(f["path"].endswith(".vmx") for f in small) and any(
        f["path"].endswith("web.vmdk") for f in small
    )
    assert all(len(f["sha256"]) == 64 for f in small), small
    repo = await Repository.open(LocalBackend(p.repo_dir))
    stored = await sha.read_sums(repo, full.id)
    assert stored is not None and {v["sha256"] for v in stored.values()} == {
        f["sha256"] for f in flats.values()
    }
    assert doc["vbm"]["sha256_object"] == sha.sums_key(full.id)

    # an incremental: the mover cannot hash it (it reads the changed windows only), the verifier does
    p.lab.guest_write("web", 2000, 5 * MIB + 100, os.urandom(3000))
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (inc,) = p.restore_points(run2)
    assert inc.kind == "incremental" and inc.verify_state == "ok"
    assert {k: v["by"] for k, v in (inc.sha256 or {}).items()} == {"2000": "verifier", "2001": "verifier"}
    doc2 = await same_from_api_and_cli(p, api, inc.id)
    assert doc2["vbm"]["parent"] == full.id
    flats2 = disk_files(doc2)
    for key, entry in flats2.items():
        assert entry["sha256"] == await sha256sum_of_export(p, inc.id, key), key
    assert flats2[2000]["sha256"] != flats[2000]["sha256"]  # disk 2000 changed
    assert flats2[2001]["sha256"] == flats[2001]["sha256"]  # 2001 did not
    assert (await sha.read_sums(repo, inc.id)) is not None

    # before the verifier has read it, an incremental says why it has no SHA-256 yet
    with p.sessions.begin() as s:
        row = s.get(RestorePointRow, inc.id)
        assert row is not None and row.sha256 is not None
        row.sha256 = {
            k: {**v, "sha256": None, "by": None, "why": sha.INCREMENTAL} for k, v in row.sha256.items()
        }
    await repo.backend.delete(sha.sums_key(inc.id))
    status, body = await api.call("GET", f"/backups/{inc.id}/manifest.json")
    assert status == 200
    assert {(f["sha256"], f["sha256_missing"]) for f in disk_files(body).values()} == {
        (None, sha.INCREMENTAL)
    }
    assert body["vbm"]["sha256_object"] is None

    # an unknown id: 404 from the API, exit 1 from the CLI, each naming it
    status, body = await api.call("GET", "/backups/rp-20990101T000000Z-00000000/manifest.json")
    assert status == 404 and "rp-20990101T000000Z-00000000" in body["detail"], body
    _, err, code = await p.cli("backups", "manifest", "rp-20990101T000000Z-00000000")
    assert code == 1 and "no restore point 'rp-20990101T000000Z-00000000'" in err, err

    # a viewer may read it
    with api.ctx.sessions.begin() as s:
        api.key = apikeys.create(s, "viewer-key", utcnow(), role=Role.VIEWER)[1]
    status, body = await api.call("GET", f"/backups/{full.id}/manifest.json")
    assert status == 200 and body == doc
