"""`vbm repo ...`: look after a repository by hand.

init                       create a repository
info                       format, counts, logical and stored bytes
ls                         restore points
check [--read-data[=F]]    structure check; with --read-data re-hash all or a fraction F
cat-manifest ID            a restore point's manifest as JSON
export ID [--disk N] [-o FILE]   a disk as a raw image (sparse file, or stdout with -o -)
usage [--json]             every repository of the catalog: used, free, per VM and job, growth
measure [--json]           measure every repository of the catalog now (stores a sample)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from typing import Any

from shared.cli.progress import Progress
from shared.model.units import human_bytes
from shared.repo import Backend, LocalBackend, RepoError, Repository, check, read_disk
from shared.repo.locations import Credentials, CredentialsFor, credentials_at, open_backend, opened
from shared.repo.repair import repair_from

LOCATION_HELP = "repository location: a path, s3://, azure://, sftp:// or rclone:// (default: the setting)"


def add_parser(sub: Any) -> None:
    repo = sub.add_parser("repo", help="backup repositories: init, info, ls, check, export")
    repo.add_argument("--repo", help=LOCATION_HELP)
    # The location is accepted where people type it: `vbm repo --repo L init`, `vbm repo init
    # --repo L`, and `vbm repo init L` for the actions that take no other argument.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--repo", dest="repo_here", default=argparse.SUPPRESS, help=LOCATION_HELP)
    actions = repo.add_subparsers(dest="repo_command", required=True, metavar="ACTION")
    for name, text in (
        ("init", "create a repository"),
        ("info", "format, counts and sizes"),
        ("ls", "list restore points"),
        ("undelete", "S3 with Object Lock: bring back objects someone deleted (remove their delete markers)"),
    ):
        act = actions.add_parser(name, help=text, parents=[where])
        act.add_argument("location", nargs="?", metavar="LOCATION", help=LOCATION_HELP)
    chk = actions.add_parser("check", help="check structure, and data with --read-data", parents=[where])
    chk.add_argument("location", nargs="?", metavar="LOCATION", help=LOCATION_HELP)
    chk.add_argument(
        "--read-data",
        nargs="?",
        const=1.0,
        default=0.0,
        type=_fraction,
        metavar="FRACTION",
        help="re-hash chunks: all, or a fraction such as 0.1 or 10%%",
    )
    chk.add_argument(
        "--start", type=float, default=0.0, help="where in the chunk id space the fraction starts (0..1)"
    )
    chk.add_argument(
        "--repair-from",
        metavar="LOCATION",
        help="replace damaged or missing chunks with good copies from this replica (a secondary repository)",
    )
    cat = actions.add_parser("cat-manifest", help="print a restore point's manifest", parents=[where])
    cat.add_argument("id")
    exp = actions.add_parser("export", help="write a disk of a restore point as a raw image", parents=[where])
    exp.add_argument("id")
    exp.add_argument("--disk", type=int, default=0, help="disk device key or index (default 0)")
    exp.add_argument("-o", "--output", default="-", help="file to write, or - for stdout")
    for name, text in (
        ("usage", "every repository of the catalog: used, free, stored vs logical (latest sample)"),
        ("measure", "measure every repository of the catalog now and store the sample"),
    ):
        act = actions.add_parser(name, help=text)
        act.add_argument("--json", action="store_true", help=f"as JSON (as the API's {name})")


def _fraction(text: str) -> float:
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction in (0, 1] or a percentage")
    return value


def run(args: argparse.Namespace, default_location: str, credentials: Credentials | CredentialsFor) -> int:
    if args.repo_command in ("usage", "measure"):  # of the catalog's repositories, not one location
        from shared.cli.usage import run as usage_run

        return usage_run(args)
    given = [g for g in (args.repo, getattr(args, "repo_here", None), getattr(args, "location", None)) if g]
    if len(set(given)) > 1:
        print(f"vbm repo: two locations given ({', '.join(given)}): give one", file=sys.stderr)
        return 2
    location = given[0] if given else default_location
    try:
        return asyncio.run(_run(args, location, credentials))
    except (RepoError, OSError) as exc:  # OSError: e.g. --repo or -o names a file/folder it cannot use
        print(f"vbm repo: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, location: str, lookup: Credentials | CredentialsFor) -> int:
    credentials = credentials_at(lookup, location)
    action = args.repo_command
    if action in ("init", "undelete"):
        backend = open_backend(location, credentials)
        try:
            return await _make(backend, action, location)
        finally:
            await backend.close()
    async with opened(location, credentials) as repo:
        if action == "info":
            return await _info(repo)
        if action == "ls":
            return await _ls(repo)
        if action == "check":
            return await _check(repo, args.read_data, args.start, lookup, args.repair_from)
        if action == "cat-manifest":
            rp = await repo.load(args.id)
            print(rp.model_dump_json(indent=2))
            return 0
        if action == "export":
            written = await export_disk(repo, args.id, args.disk, args.output)
            print(
                f"sha256 {written['sha256']}  disk {written['disk']} of {written['restore_point']}",
                file=sys.stderr,
            )
            return 0
    raise AssertionError(action)


async def _make(backend: Backend, action: str, location: str) -> int:
    """`init` (a new repository) and `undelete` (S3 with Object Lock), on the bare backend."""
    if action == "init":
        if isinstance(backend, LocalBackend):
            os.makedirs(location, exist_ok=True)
        repo = await Repository.init(backend)
        print(f"created repository {repo.config.id} at {location}")
        return 0
    if action == "undelete":
        undelete = getattr(backend, "undelete", None)
        if undelete is None:
            raise RepoError(f"{location}: undelete is for S3 buckets with versioning (Object Lock) only")
        back = await undelete()
        for key in back:
            print(f"brought back {key}")
        print(f"{len(back)} object(s) brought back; now run: vbm repo check", file=sys.stderr)
        return 0
    raise AssertionError(action)


async def _info(repo: Repository) -> int:
    chunks = stored = 0
    async for info in repo.backend.list("chunks/"):
        chunks += 1
        stored += info.size
    ids = await repo.restore_point_ids()
    logical = 0
    for rp_id in ids:
        rp = await repo.load(rp_id)
        logical += sum(d.capacity for d in rp.disks)
    cfg = repo.config
    print(
        json.dumps(
            {
                "location": repo.backend.location,
                "id": cfg.id,
                "version": cfg.version,
                "chunk_size": cfg.chunk_size,
                "hash": cfg.hash,
                "compression": cfg.compression,
                "restore_points": len(ids),
                "chunks": chunks,
                "stored_bytes": stored,
                "logical_bytes": logical,
                "reduction": round(logical / stored, 2) if stored else None,
                **(
                    {"object_lock": await lock()}
                    if (lock := getattr(repo.backend, "object_lock", None))
                    else {}
                ),
            },
            indent=2,
        )
    )
    return 0


async def _ls(repo: Repository) -> int:
    print(f"{'restore point':<35} {'vm':<24} {'finished':<20} {'disks':>5} {'size':>10}  parent")
    for rp_id in await repo.restore_point_ids():
        rp = await repo.load(rp_id)
        size = human_bytes(sum(d.capacity for d in rp.disks))
        finished = rp.finished.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{rp.id:<35} {rp.vm_name[:24]:<24} {finished:<20} {len(rp.disks):>5} {size:>10}"
            f"  {rp.parent or '-'}"
        )
    return 0


async def _check(
    repo: Repository,
    fraction: float,
    start: float,
    credentials: Credentials | CredentialsFor,
    repair: str | None = None,
) -> int:
    bar = Progress("reading chunks", None, unit="chunks") if fraction else None
    report = await check(repo, read_data=fraction, start=start, progress=bar)
    if bar is not None:
        bar.done()
    print(
        f"{report.restore_points} restore points, {report.chunks_referenced} chunks referenced,"
        f" {report.chunks_read} read and verified"
    )
    for cid, problem in sorted(report.damaged_chunks.items()):
        print(f"damaged chunk {cid}: {problem}")
    for rp_id, problems in sorted(report.damaged_restore_points.items()):
        print(f"damaged restore point {rp_id}:")
        for problem in problems:
            print(f"  {problem}")
    if repair and report.damaged_chunks:
        replica = open_backend(repair, credentials_at(credentials, repair))
        try:
            fixed, failed = await repair_from(repo, replica, report.damaged_chunks)
        finally:
            await replica.close()
        for cid in fixed:
            print(f"repaired chunk {cid} from {repair}")
        for cid, why in sorted(failed.items()):
            print(f"could not repair chunk {cid}: {why}")
        report = await check(repo, read_data=fraction, start=start)
        print(
            "after the repair: " + ("no problems found" if report.ok else "the repository still has problems")
        )
        return 0 if report.ok else 1
    print("no problems found" if report.ok else "repository has problems (see above)")
    return 0 if report.ok else 1


async def export_disk(repo: Repository, rp_id: str, disk_ref: int, output: str) -> dict[str, Any]:
    """Write a disk as a raw image to `output` (a sparse file, or stdout for -); what was
    written: restore point, disk key, output, size_bytes, sha256."""
    rp = await repo.load(rp_id)
    disk = rp.disk(disk_ref)
    digest = hashlib.sha256()
    bar = Progress(f"exporting disk {disk.key}", disk.capacity)
    if output == "-":
        out = sys.stdout.buffer
        async for piece in read_disk(repo, rp, disk):
            digest.update(piece)
            out.write(piece)
            bar(len(piece))
        out.flush()
    else:
        tmp = f"{output}.partial"
        with open(tmp, "wb") as fh:  # noqa: ASYNC230 - the CLI runs one task; writes are sequential
            async for piece in read_disk(repo, rp, disk):
                digest.update(piece)
                if piece.count(0) == len(piece):
                    fh.seek(len(piece), os.SEEK_CUR)  # keep the image sparse
                else:
                    fh.write(piece)
                bar(len(piece))
            fh.truncate(disk.capacity)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    bar.done()
    return {
        "restore_point": rp.id,
        "disk": disk.key,
        "output": output,
        "size_bytes": disk.capacity,
        "sha256": digest.hexdigest(),
    }
