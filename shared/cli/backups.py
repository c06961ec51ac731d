"""`vbm backups ls|show|copies|verify|pin|unpin|manifest|download` and `vbm verify`: the restore
point catalog on the terminal. With `--json` each prints what the REST API answers
(/api/v1/backups, /api/v1/replications), made by the same catalog functions."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import idempotency, manifest_json
from shared.catalog import locations as locstore
from shared.catalog import runs as runstore
from shared.catalog.listing import Window
from shared.cli.audit import actor
from shared.cli.runs import print_json, when
from shared.clock import iso, utcnow
from shared.model.units import human_bytes
from shared.repo import RepoError
from shared.repo.locations import opened
from shared.settings import Settings


def add_parsers(sub: Any) -> None:
    backups = sub.add_parser("backups", help="the restore point catalog")
    b_acts = backups.add_subparsers(dest="backups_command", required=True, metavar="ACTION")
    ls = b_acts.add_parser("ls", help="restore points, newest first")
    ls.add_argument("--vm", help="VM name or moref")
    ls.add_argument("--vcenter", help="only the VMs of this vCenter")
    ls.add_argument("--job", help="job id or name")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="the page as JSON (as GET /api/v1/backups)")
    show = b_acts.add_parser("show", help="a restore point, its copies and its manifest")
    show.add_argument("restore_point", metavar="RESTORE_POINT_ID")
    show.add_argument("--json", action="store_true", help="as JSON (as GET /api/v1/backups/{id})")
    for name, text in (
        ("pin", "retention never removes it (until unpinned)"),
        ("unpin", "retention decides again"),
    ):
        pin = b_acts.add_parser(name, help=f"{name} a restore point: {text}")
        pin.add_argument("restore_point", metavar="RESTORE_POINT_ID")
        pin.add_argument("--json", action="store_true", help="the restore point as JSON (as the API's)")
    download = b_acts.add_parser(
        "download", help="a disk of a restore point as a raw image (from its repository in the catalog)"
    )
    download.add_argument("restore_point", metavar="RESTORE_POINT_ID")
    download.add_argument("--disk", type=int, default=0, help="disk device key or index (default 0)")
    download.add_argument("-o", "--output", default="-", help="file to write (sparse), or - for stdout")
    download.add_argument(
        "--json",
        action="store_true",
        help="print what was written (file, size, SHA-256) as JSON; needs -o FILE",
    )
    copies = b_acts.add_parser("copies", help="copies to secondary repositories (replication), newest first")
    copies.add_argument("--state", choices=("pending", "running", "done", "failed"))
    copies.add_argument("--restore-point", help="only the copies of this restore point")
    copies.add_argument("--limit", type=int, default=50)
    copies.add_argument("--json", action="store_true", help="the page as JSON (as GET /api/v1/replications)")
    manifest = b_acts.add_parser(
        "manifest", help="manifest.json of a restore point: every file with its SHA-256 (as the API's)"
    )
    manifest.add_argument("restore_point", metavar="RESTORE_POINT_ID")
    manifest.add_argument("--json", action="store_true", help="JSON (the default and only output)")
    manifest.add_argument("-o", "--output", default="-", help="file to write, or - for stdout (default)")
    verify = b_acts.add_parser("verify", help="verify a restore point now (every chunk read)")
    _verify_args(verify)
    _verify_args(sub.add_parser("verify", help="verify a restore point now (same as: backups verify)"))


def dispatch(
    args: argparse.Namespace, sessions: sessionmaker[Session], settings: Settings | None = None
) -> int:
    """`vbm backups ACTION` or `vbm verify`."""
    action = getattr(args, "backups_command", None)
    if action == "manifest":
        assert settings is not None
        return _manifest(args, sessions, settings)
    if args.command == "verify" or action == "verify":
        return _verify(args, sessions)
    if action == "copies":
        return copies_ls(sessions, args.state, args.restore_point, args.limit, args.json)
    if action in ("pin", "unpin"):
        with sessions.begin() as s:
            view = runstore.set_pinned(s, args.restore_point, action == "pin")
        print_json(view) if args.json else print(f"{action}ned {args.restore_point}")
        return 0
    if action in ("show", "download"):
        assert settings is not None
        from shared.cli.backup_show import download, show

        return (show if action == "show" else download)(args, sessions, settings)
    return backups_ls(sessions, args.vm, args.job, args.limit, args.vcenter, args.json)


def _manifest(args: argparse.Namespace, sessions: sessionmaker[Session], settings: Settings) -> int:
    """The same document as GET /api/v1/backups/{id}/manifest.json."""
    with sessions() as s:
        row = manifest_json.catalogued(s, args.restore_point)
    location = row["repository"]

    async def build() -> dict[str, Any]:
        async with opened(location, locstore.lookup(settings, sessions)(location)) as repo:
            return await manifest_json.build(repo, row)

    try:
        document = asyncio.run(build())
    except (RepoError, OSError) as exc:
        print(f"vbm backups manifest: repository {location}: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(document, indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    missing = [f["path"] for f in document["files"] if f["sha256"] is None]
    if missing:
        print(f"no SHA-256 yet for: {', '.join(missing)} (see sha256_missing)", file=sys.stderr)
    return 0


def _verify_args(p: Any) -> None:
    p.add_argument("restore_point", metavar="RESTORE_POINT_ID")
    p.add_argument("--wait", action="store_true", help="wait for the result; exit 1 if it failed")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (default 3600)")
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a retry with the same key (within a day) queues nothing twice and prints the first answer",
    )
    p.add_argument("--json", action="store_true", help="the request as JSON (as POST .../verify answers)")


def once(sessions: sessionmaker[Session], route: str, key: str | None, work: Any) -> idempotency.Answer:
    """`work(session)` in one transaction; with an idempotency key, once per key of this OS user
    on `route`, as the API keeps keys (shared/catalog/idempotency.py)."""
    if key is None:
        with sessions.begin() as s:
            answer: idempotency.Answer = work(s)
            return answer
    claim = idempotency.Claim(
        caller=actor(), route=route, key=idempotency.check_key(key), body_sha256=idempotency.body_hash(b"")
    )
    return idempotency.once(sessions, claim, work, utcnow())


def _verify(args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    asked = utcnow()

    def start(s: Session) -> idempotency.Answer:
        return idempotency.Answer(202, runstore.verify_request(s, args.restore_point, asked))

    answer = once(sessions, f"vbm verify {args.restore_point}", args.idempotency_key, start)
    print_json(answer.body) if args.json else print(answer.body["request_id"])
    if answer.replayed:
        print("(the request this key made before)", file=sys.stderr)
    if not args.wait:
        print(
            f"verification of {args.restore_point} requested; a running vbm verifies it."
            f" See the result with: vbm backups ls (or GET /api/v1/backups/{args.restore_point})",
            file=sys.stderr,
        )
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        with sessions() as s:
            row = runstore.get_backup(s, args.restore_point)
            if row.verified_at is not None and row.verified_at >= asked:
                out = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON only
                print(f"{row.id}: {row.verify_state} ({row.verify_how}, {iso(row.verified_at)})", file=out)
                for line in row.verify_problems:
                    print(f"  problem: {line}", file=out)
                for line in row.verify_notes:
                    print(f"  note: {line}", file=out)
                return 0 if row.verify_state == "ok" else 1
        time.sleep(0.5)
    print(f"vbm verify: no result within {args.timeout:.0f}s: is vbm running (vbm up)?", file=sys.stderr)
    return 2


def backups_ls(
    sessions: sessionmaker[Session],
    vm: str | None,
    job: str | None,
    limit: int,
    vcenter: str | None = None,
    as_json: bool = False,
) -> int:
    window = Window.parse({"limit": str(limit)})
    with sessions() as s:
        found = runstore.list_backups(s, window, vm=vm, job=job, vcenter=vcenter)
        total, rows = found.total, found.rows
        views = [runstore.backup_view(r) for r in rows]
    if as_json:
        print_json(found.answer("backups", views, window))
        return 0
    head = f"{'restore point':<32} {'vcenter':<12} {'vm':<20} {'kind':<11} {'finished':<21}"
    print(f"{head} {'size':>10} {'stored':>10} verify")
    for b in views:
        print(
            f"{b['id']:<32} {b['vcenter'][:12]:<12} {b['vm_name'][:20]:<20} {b['kind']:<11}"
            f" {when(b['finished_at']):<21}"
            f" {human_bytes(b['logical_bytes']):>10} {human_bytes(b['bytes_stored']):>10} {b['verify_state']}"
        )
    print(f"{len(views)} of {total} restore points", file=sys.stderr)
    return 0


def copies_ls(
    sessions: sessionmaker[Session], state: str | None, rp: str | None, limit: int, as_json: bool = False
) -> int:
    """Copies to secondary repositories: state, bytes sent, when; the error of a failed try.
    Exit code 1 when one on the page failed (also with --json)."""
    from shared.catalog import replication

    window = Window.parse({"limit": str(limit)})
    with sessions() as s:
        found = replication.listing(s, window, state=state, restore_point=rp)
        total, views = found.total, [replication.view(r) for r in found.rows]
    failed = any(c["state"] == "failed" for c in views)
    if as_json:
        print_json(found.answer("replications", views, window))
        return 1 if failed else 0
    print(f"{'restore point':<32} {'state':<8} {'tries':>5} {'sent':>10} {'when':<21} target")
    for c in views:
        at = c["finished_at"] or c["next_try_at"] or c["updated_at"]
        print(
            f"{c['restore_point_id']:<32} {c['state']:<8} {c['attempts']:>5}"
            f" {human_bytes(c['bytes_sent']):>10} {when(at):<21} {c['target']}"
        )
        if c["error"] and c["state"] != "done":
            print(f"{'':<32} {'':<8} last error: {c['error']}")
    print(f"{len(views)} of {total} copies", file=sys.stderr)
    return 1 if failed else 0
