"""`vbm job preview J` and `vbm job create ... --preview`: the VMs a job (or a job body) holds
today, its selectors resolved against each vCenter now, and why each; with --json, what
GET /api/v1/jobs/{id}/preview and POST /api/v1/jobs/preview answer."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import jobs as jobstore
from shared.settings import Settings


def job_preview(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    from shared.vsphere import selection

    with sessions() as s:
        chosen = selection.of_job(jobstore.find_job(s, args.job))
    return show(jobstore.preview(settings, chosen), args.json)


def show(found: dict[str, Any], as_json: bool) -> int:
    """A preview as a table, or as JSON (the whole answer, exit 0); as a table, exit 1 when a
    vCenter could not be read."""
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"{'vcenter':<12} {'vm':<32} {'moref':<10} {'host':<14} chosen by")
    for vm in found["vms"]:
        host = (vm["host"] or "-")[:14]
        name = vm["name"][:32]
        print(f"{vm['vcenter'][:12]:<12} {name:<32} {vm['moref']:<10} {host:<14} {vm['chosen_by']}")
        for disk in vm["skipped_disks"]:
            print(f"{'':<12}   disk {disk['key']} ({disk['label']}) skipped: {disk['reason']}")
    for down in found["unreachable"]:
        print(f"vbm job preview: vCenter {down['vcenter']} cannot be read: {down['error']}", file=sys.stderr)
    print(f"{found['total']} VM(s)", file=sys.stderr)
    return 1 if found["unreachable"] else 0
