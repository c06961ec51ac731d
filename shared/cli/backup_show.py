"""`vbm backups show ID` and `vbm backups download ID`: one restore point, found through the
catalog, with its repository opened as the gateway opens it (a stored location's credentials,
else the settings'). The same functions as GET /api/v1/backups/{id} and .../disks/{disk}."""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import backups as backupstore
from shared.catalog import locations as locstore
from shared.catalog import runs as runstore
from shared.cli.repo import export_disk
from shared.cli.runs import print_json, when
from shared.model.units import human_bytes
from shared.repo import RepoError
from shared.repo.locations import opened
from shared.settings import Settings


def show(args: argparse.Namespace, sessions: sessionmaker[Session], settings: Settings) -> int:
    with sessions() as s:
        view = backupstore.catalogued(s, args.restore_point)
    detail = asyncio.run(backupstore.with_manifest(view, locstore.lookup(settings, sessions)))
    if args.json:
        print_json(detail)
        return 0
    what = f"{detail['kind']} of {detail['vm_name']} on {detail['vcenter']}"
    print(f"{detail['id']}: {what}, job {detail['job_id'] or '-'}")
    print(f"  finished  {when(detail['finished_at'])}  in {detail['repository']}")
    print(f"  size      {human_bytes(detail['logical_bytes'])}, stored {human_bytes(detail['bytes_stored'])}")
    verified = f" ({detail['verify_how']}, {when(detail['verified_at'])})" if detail["verified_at"] else ""
    print(f"  verify    {detail['verify_state']}{verified}" + ("  pinned" if detail["pinned"] else ""))
    for line in detail["verify_problems"]:
        print(f"  problem: {line}")
    for copy in detail["replications"]:
        print(f"  copy to {copy['target']}: {copy['state']}")
    if detail["manifest"] is not None:
        for disk in detail["manifest"]["disks"]:
            name = f"disk {disk['key']} ({disk['label']})" if disk["label"] else f"disk {disk['key']}"
            print(f"  {name}: {human_bytes(disk['capacity'])}  {disk['file']}")
    else:
        print(f"  manifest: cannot be read: {detail['manifest_error']}", file=sys.stderr)
    return 0


def download(args: argparse.Namespace, sessions: sessionmaker[Session], settings: Settings) -> int:
    """The disk as a raw image: stdout (-o -) or a sparse file; its SHA-256 at the end."""
    if args.json and args.output == "-":
        print("vbm backups download: --json needs -o FILE (stdout holds the image)", file=sys.stderr)
        return 2
    with sessions() as s:
        location = runstore.get_backup(s, args.restore_point).repository
    credentials = locstore.lookup(settings, sessions)(location)

    async def write() -> dict[str, object]:
        async with opened(location, credentials) as repo:
            return await export_disk(repo, args.restore_point, args.disk, args.output)

    try:
        written = asyncio.run(write())
    except (RepoError, OSError) as exc:
        print(f"vbm backups download: repository {location}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json(written)
    else:
        print(
            f"sha256 {written['sha256']}  disk {written['disk']} of {written['restore_point']}",
            file=sys.stderr,
        )
    return 0
