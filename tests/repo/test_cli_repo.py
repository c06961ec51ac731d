"""`vbm repo ...` through real processes: exit codes, output, and clear errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.repo import LocalBackend, Repository, Writer, restore_point
from shared.repo.check import in_subset
from shared.repo.repository import chunk_key, manifest_key
from tests.plugins.s3 import S3Server
from tests.repo.conftest import BytesSource, make_image

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)
CS = 64 * 1024


def vbm(
    tmp_path: Path, *args: str, repo: Path | str | None = None, **extra_env: str
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env["VBM_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra_env)
    where = ["--repo", str(repo)] if repo is not None else []
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "repo", *where, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def failed(result: subprocess.CompletedProcess[bytes]) -> str:
    """The error of a run that must fail cleanly: exit 1, one message, no traceback."""
    err = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, result.stdout, err)
    assert "Traceback" not in err and err.startswith("vbm repo: "), err
    return err


@dataclass
class Built:
    path: Path
    images: dict[str, bytes]  # restore point id -> image of its disk
    sparse: str  # a restore point of a mostly-zero disk
    incremental: str
    other: str


async def _build(path: Path) -> Built:
    repo = await Repository.init(LocalBackend(path), chunk_size=CS)
    writer = Writer(repo, workers=3)
    images: dict[str, bytes] = {}
    try:
        data = bytearray(bytes(80 * CS))  # 5 MiB, mostly zeros
        data[3 * CS : 5 * CS] = make_image(2 * CS, seed=1)
        data[40 * CS + 5 : 40 * CS + 900] = b"x" * 895
        disk, _ = await writer.write_disk(
            BytesSource(bytes(data)), key=2000, capacity=len(data), file="web/a"
        )
        rp1 = restore_point(vm_name="web", started=NOW, finished=NOW, disks=[disk], run_id="r1")
        await repo.commit(rp1)
        images[rp1.id] = bytes(data)
        data[70 * CS : 70 * CS + 10] = b"0123456789"
        disk2, _ = await writer.write_disk(
            BytesSource(bytes(data)),
            key=2000,
            capacity=len(data),
            file="web/a",
            parent=disk,
            parent_id=rp1.id,
            changed=[(70 * CS, 10)],
        )
        rp2 = restore_point(vm_name="web", started=NOW, finished=NOW, disks=[disk2], parent=rp1.id)
        await repo.commit(rp2)
        images[rp2.id] = bytes(data)
        other = make_image(6 * CS + 777, seed=2)
        disk3, _ = await writer.write_disk(BytesSource(other), key=2001, capacity=len(other), file="db/b")
        rp3 = restore_point(vm_name="db", started=NOW, finished=NOW, disks=[disk3])
        await repo.commit(rp3)
        images[rp3.id] = other
    finally:
        writer.close()
        await repo.backend.close()
    return Built(path, images, rp1.id, rp2.id, rp3.id)


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return asyncio.run(_build(tmp_path / "repo"))


def chunk_files(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (path / "chunks").glob("*/*")}


def referenced(built: Built) -> dict[str, set[str]]:
    """chunk id -> restore points using it, from the manifests as `cat-manifest` prints them."""
    users: dict[str, set[str]] = {}
    for rp_id in built.images:
        text = vbm(built.path.parent, "cat-manifest", rp_id, repo=built.path)
        for d in json.loads(ok(text))["disks"]:
            for entry in d["chunks"]:
                if isinstance(entry, str):
                    users.setdefault(entry, set()).add(rp_id)
    return users


def test_init_info_and_ls(tmp_path: Path, built: Built) -> None:
    new = tmp_path / "new"
    assert "created repository" in ok(vbm(tmp_path, "init", repo=new))
    info = json.loads(ok(vbm(tmp_path, "info", repo=new)))
    assert info["restore_points"] == info["chunks"] == info["stored_bytes"] == 0
    assert info["version"] == 1 and info["chunk_size"] == 4 * 1024 * 1024 and info["reduction"] is None
    assert "already a vbm repository" in failed(vbm(tmp_path, "init", repo=new))

    # the default location is <data_dir>/repo
    assert str(tmp_path / "data" / "repo") in ok(vbm(tmp_path, "init"))
    assert json.loads(ok(vbm(tmp_path, "info")))["location"] == str(tmp_path / "data" / "repo")

    info = json.loads(ok(vbm(tmp_path, "info", repo=built.path)))
    files = chunk_files(built.path)
    assert info["location"] == str(built.path) and info["chunk_size"] == CS
    assert info["restore_points"] == 3 and info["chunks"] == len(files)
    assert info["stored_bytes"] == sum(files.values())
    assert info["logical_bytes"] == sum(len(i) for i in built.images.values())
    assert info["reduction"] > 1

    lines = ok(vbm(tmp_path, "ls", repo=built.path)).splitlines()
    assert lines[0].split()[:2] == ["restore", "point"] and len(lines) == 4
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(built.images)
    assert rows[built.incremental].split()[-1] == built.sparse  # parent
    assert rows[built.sparse].split()[-1] == "-"
    assert " web " in rows[built.sparse] and " db " in rows[built.other]
    assert "2026-11-26 08:30:00" in rows[built.other] and "5.0 MiB" in rows[built.sparse]
    assert ok(vbm(tmp_path, "ls", repo=new)).count("\n") == 1  # just the header


def test_check_and_read_data_subsets(tmp_path: Path, built: Built) -> None:
    users = referenced(built)
    n = len(users)
    out = ok(vbm(tmp_path, "check", repo=built.path))
    assert f"3 restore points, {n} chunks referenced, 0 read and verified" in out
    assert "no problems found" in out
    assert f"{n} read and verified" in ok(vbm(tmp_path, "check", "--read-data", repo=built.path))
    quarter = sum(in_subset(c, 0.0, 0.25) for c in users)
    out = ok(vbm(tmp_path, "check", "--read-data=25%", repo=built.path))
    assert f"{quarter} read and verified" in out
    half = sum(in_subset(c, 0.5, 0.5) for c in users)
    out = ok(vbm(tmp_path, "check", "--read-data", "0.5", "--start", "0.5", repo=built.path))
    assert f"{half} read and verified" in out
    bad = vbm(tmp_path, "check", "--read-data=0", repo=built.path)
    assert bad.returncode == 2 and b"must be a fraction" in bad.stderr


def test_check_names_the_damaged_chunk_and_restore_points(tmp_path: Path, built: Built) -> None:
    users = referenced(built)
    shared = next(c for c, u in users.items() if len(u) == 2)  # in the full and its incremental
    path = built.path / chunk_key(shared)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x20
    path.write_bytes(bytes(raw))
    assert "no problems found" in ok(vbm(tmp_path, "check", repo=built.path))  # not structural
    result = vbm(tmp_path, "check", "--read-data", repo=built.path)
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert f"damaged chunk {shared}:" in out
    for rp_id in users[shared]:
        assert f"damaged restore point {rp_id}:" in out
    assert built.other not in out and "repository has problems" in out

    path.unlink()
    result = vbm(tmp_path, "check", repo=built.path)
    out = result.stdout.decode()
    assert result.returncode == 1 and f"damaged chunk {shared}: is missing" in out
    assert all(f"damaged restore point {rp_id}:" in out for rp_id in users[shared])

    # exporting a damaged restore point fails cleanly, naming both; no image appears
    target = tmp_path / "out.img"
    err = failed(vbm(tmp_path, "export", built.sparse, "-o", str(target), repo=built.path))
    assert shared in err and built.sparse in err and not target.exists()


def test_cat_manifest(tmp_path: Path, built: Built) -> None:
    doc = json.loads(ok(vbm(tmp_path, "cat-manifest", built.incremental, repo=built.path)))
    assert doc["id"] == built.incremental and doc["parent"] == built.sparse and doc["vm_name"] == "web"
    [disk] = doc["disks"]
    assert disk["capacity"] == 80 * CS and disk["built_on"] == built.sparse and disk["stored_windows"] == 1
    assert "does not exist" in failed(vbm(tmp_path, "cat-manifest", "rp-nope", repo=built.path))


def test_export_to_a_sparse_file_and_to_stdout(tmp_path: Path, built: Built) -> None:
    for rp_id in (built.sparse, built.incremental, built.other):
        image = built.images[rp_id]
        target = tmp_path / f"{rp_id}.img"
        result = vbm(tmp_path, "export", rp_id, "-o", str(target), repo=built.path)
        ok(result)
        assert target.read_bytes() == image
        assert f"sha256 {hashlib.sha256(image).hexdigest()}" in result.stderr.decode()
        assert not Path(f"{target}.partial").exists()
    st = (tmp_path / f"{built.sparse}.img").stat()
    assert st.st_size == 80 * CS and st.st_blocks * 512 < st.st_size // 4, "the image is not sparse"

    result = vbm(tmp_path, "export", built.other, "--disk", "2001", repo=built.path)
    assert result.returncode == 0 and result.stdout == built.images[built.other]
    result = vbm(tmp_path, "export", built.sparse, "-o", "-", repo=built.path)
    assert result.returncode == 0 and result.stdout == built.images[built.sparse]

    assert "has no disk 7" in failed(vbm(tmp_path, "export", built.other, "--disk", "7", repo=built.path))
    err = failed(vbm(tmp_path, "export", "rp-20260101T000000Z-00000000", repo=built.path))
    assert "restore point rp-20260101T000000Z-00000000 does not exist" in err


def test_clear_errors(tmp_path: Path, built: Built) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("hello")
    # every kind of non-repository with one action, and every action with one of them (each
    # case is a process of its own: the full product of the two adds time, not coverage)
    cases = [(where, ["info"]) for where in (empty, tmp_path / "missing", a_file)]
    cases += [
        (a_file, action) for action in (["ls"], ["check"], ["cat-manifest", "rp-x"], ["export", "rp-x"])
    ]
    for where, action in cases:
        err = failed(vbm(tmp_path, *action, repo=where))
        assert "is not a vbm repository" in err and "vbm repo init" in err, (where, action, err)
    assert "File exists" in failed(vbm(tmp_path, "init", repo=a_file))

    config = json.loads((built.path / "config").read_text())
    (built.path / "config").write_text(json.dumps({**config, "version": 2}))
    for action in (["info"], ["ls"], ["check"], ["export", built.sparse]):
        err = failed(vbm(tmp_path, *action, repo=built.path))
        assert "format version 2; this vbm reads version 1 only" in err

    (built.path / "config").write_text(json.dumps(config))
    manifest = built.path / manifest_key(built.other)
    manifest.write_bytes(manifest.read_bytes()[:-5])
    err = failed(vbm(tmp_path, "cat-manifest", built.other, repo=built.path))
    assert built.other in err and "checksum" in err
    result = vbm(tmp_path, "check", repo=built.path)
    assert result.returncode == 1 and f"damaged restore point {built.other}:" in result.stdout.decode()


def test_a_repository_on_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    where = f"s3://{s3_server.endpoint}/{s3_bucket}/r1?tls=false"
    keys = {"VBM_S3__ACCESS_KEY": s3_server.access_key, "VBM_S3__SECRET_KEY": s3_server.secret_key}
    assert "created repository" in ok(vbm(tmp_path, "init", repo=where, **keys))
    info = json.loads(ok(vbm(tmp_path, "info", repo=where, **keys)))
    assert info["location"] == where and info["restore_points"] == 0
    assert "already a vbm repository" in failed(vbm(tmp_path, "init", repo=where, **keys))
    err = failed(vbm(tmp_path, "info", repo=where))
    assert "no S3 credentials are configured: set VBM_S3__ACCESS_KEY and VBM_S3__SECRET_KEY" in err
    bad = {**keys, "VBM_S3__SECRET_KEY": "wrong-secret-123"}
    err = failed(vbm(tmp_path, "info", repo=where, **bad))
    assert "credentials were refused" in err and "wrong-secret-123" not in err
    assert "ftp:// is not a supported location" in failed(vbm(tmp_path, "info", repo="ftp://x/y"))


def test_check_repairs_damaged_and_missing_chunks_from_a_replica(tmp_path: Path, built: Built) -> None:
    import shutil

    replica = tmp_path / "replica"
    shutil.copytree(built.path, replica)  # what replication leaves: the same objects
    users = referenced(built)
    damaged, missing, lost = sorted(users)[:3]
    path = built.path / chunk_key(damaged)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    (built.path / chunk_key(missing)).unlink()
    (built.path / chunk_key(lost)).unlink()
    (replica / chunk_key(lost)).unlink()  # gone from both: cannot be repaired

    result = vbm(tmp_path, "check", "--read-data", "--repair-from", str(replica), repo=built.path)
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert f"repaired chunk {damaged} from {replica}" in out and f"repaired chunk {missing} from" in out
    assert f"could not repair chunk {lost}: not in {replica} either" in out
    assert "after the repair: the repository still has problems" in out
    assert (built.path / chunk_key(damaged)).read_bytes() == (replica / chunk_key(damaged)).read_bytes()

    (replica / chunk_key(lost)).write_bytes(b"not a chunk")  # damaged on the replica: not copied back
    out = vbm(tmp_path, "check", "--repair-from", str(replica), repo=built.path).stdout.decode()
    assert f"could not repair chunk {lost}: damaged in {replica} too" in out
