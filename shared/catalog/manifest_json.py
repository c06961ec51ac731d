"""`manifest.json` of a backup (roadmap 2.1/2.2): every file of a restore point with its SHA-256,
checkable with `sha256sum`, plus vbm's own fields. Served by `GET /api/v1/backups/{id}/manifest.json`
and `vbm backups manifest ID`, both through `build`.

    {"job_id", "vm_name", "vcenter", "started", "finished", "snapshot",
     "files": [{"path", "size_bytes", "sha256"[, "sha256_missing": why]}],
     "vbm": {"restore_point", "parent", "kind", "disks": [{"key", "change_id", "blake3_tree", ...}], ...}}

A disk image's SHA-256 is the catalog's (`restore_points.sha256`, computed by the mover for a
full and by the verifier otherwise; see shared/repo/digests.py), else the repository's object
next to the manifest; a small file's (vmx, nvram, descriptor) is computed here from its bytes,
read back and checked against its BLAKE3 digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.orm import Session

from shared.catalog import runs as runstore
from shared.clock import iso
from shared.errors import NotFound
from shared.repo import ManifestError, RepoError, Repository, read_file
from shared.repo import digests as sha
from shared.repo.manifest import FileEntry, RestorePoint
from shared.repo.repository import manifest_key

NOT_YET = "not computed yet: the verifier computes it when it reads the restore point (vbm verify ID)"


def catalogued(session: Session, rp_id: str) -> dict[str, Any]:
    """What the catalog knows of `rp_id` for its manifest.json (NotFound for an unknown id)."""
    row = runstore.get_backup(session, rp_id)
    return {**runstore.backup_view(row), "sha256": row.sha256}


async def build(repo: Repository, row: dict[str, Any]) -> dict[str, Any]:
    """The manifest.json of the catalogued restore point `row` (see `catalogued`)."""
    rp_id = row["id"]
    try:
        rp = await repo.load(rp_id)
    except ManifestError as exc:
        if "does not exist" in str(exc):
            raise NotFound(
                f"restore point {rp_id} is in the catalog but not in {row['repository']}"
            ) from None
        raise
    disks: dict[str, dict[str, Any]] = dict(row.get("sha256") or {})
    if any(not (disks.get(str(d.key)) or {}).get("sha256") for d in rp.disks):
        for key, value in (await sha.read_sums(repo, rp_id) or {}).items():
            if value.get("sha256") and not (disks.get(key) or {}).get("sha256"):
                disks[key] = value
    files = [await _file(repo, rp, f, disks) for f in rp.files]
    return {
        "job_id": row.get("job_id") or rp.job_id,
        "vm_name": rp.vm_name,
        "vcenter": row.get("vcenter") or rp.vcenter,
        "started": iso(rp.started),
        "finished": iso(rp.finished),
        "snapshot": rp.snapshot_name,
        "files": files,
        "vbm": _ours(rp, row, disks),
    }


async def _file(repo: Repository, rp: RestorePoint, f: FileEntry, disks: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": f.path, "size_bytes": f.size, "sha256": None}
    if f.disk_key is not None:
        known = disks.get(str(f.disk_key)) or {}
        entry["sha256"] = known.get("sha256")
        if entry["sha256"] is None:
            entry["sha256_missing"] = known.get("why") or NOT_YET
        return entry
    try:
        entry["sha256"] = hashlib.sha256(await read_file(repo, rp, f)).hexdigest()
    except RepoError as exc:
        entry["sha256_missing"] = f"cannot be read back: {exc}"
    return entry


def _ours(rp: RestorePoint, row: dict[str, Any], disks: dict[str, Any]) -> dict[str, Any]:
    return {
        "restore_point": rp.id,
        "parent": rp.parent,
        "kind": row.get("kind") or ("incremental" if rp.parent else "full"),
        "run_id": rp.run_id,
        "repository": row.get("repository"),
        "manifest": manifest_key(rp.id),
        "sha256_object": sha.sums_key(rp.id)
        if disks and all(v.get("sha256") for v in disks.values())
        else None,
        "vm_moref": rp.vm_moref,
        "snapshot_moref": rp.snapshot_moref,
        "verify_state": row.get("verify_state"),
        "chunk_hash": "blake3",
        "disks": [
            {
                "key": d.key,
                "label": d.label,
                "file": d.file,
                "capacity": d.capacity,
                "chunk_size": d.chunk_size,
                "change_id": d.change_id,
                "built_on": d.built_on,
                "blake3_tree": d.tree,
                "sha256_by": (disks.get(str(d.key)) or {}).get("by"),
            }
            for d in rp.disks
        ],
        "skipped": [s.model_dump() for s in rp.skipped],
        "immutable_until": iso(rp.immutable_until) if rp.immutable_until else None,
    }
