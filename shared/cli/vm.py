"""`vbm vm ls`: the VMs of the configured vCenters, asked now, and whether a job protects each;
with --json, what GET /api/v1/vms answers (shared/catalog/vms.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import jobs as jobstore
from shared.catalog import vcenters as vcstore
from shared.catalog import vms as vmstore
from shared.errors import Invalid, Unreachable
from shared.model.units import human_bytes
from shared.settings import Settings, VCenterSettings

if TYPE_CHECKING:
    from shared.vsphere import VMInfo


def add_parsers(sub: Any) -> None:
    vm = sub.add_parser("vm", help="VMs of the configured vCenters")
    vm_acts = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")
    vm_ls = vm_acts.add_parser("ls", help="every VM, with its disks and whether a job protects it")
    vm_ls.add_argument("--vcenter", help="only this vCenter")
    vm_ls.add_argument("--json", action="store_true", help="as GET /api/v1/vms answers (no protected column)")


def vm_ls(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """Every VM, asked of vCenter now; a vCenter that does not answer is named (exit 1)."""
    vcenters = [jobstore.vcenter_of(settings, args.vcenter)] if args.vcenter else list(settings.vcenters)
    if not vcenters:
        raise Invalid(
            "vcenter", "no vCenter is configured (set VBM_VCENTERS, vbm vcenter add, or run vbm up's lab)"
        )
    if args.json:
        return _ls_json(vcenters, sessions, settings, args.vcenter is None)
    with sessions() as s:
        # a VM is (vCenter, moref): a job's VM names its own vCenter when it is not the job's
        protected = {
            (v.get("vcenter") or j.vcenter, v["moref"]) for j in jobstore.list_jobs(s) for v in j.vms
        }
    print(f"{'vcenter':<12} {'vm':<32} {'moref':<10} {'power':<11} {'disks':>5} {'size':>10}  cbt  protected")
    failed = 0
    for vc in vcenters:
        try:
            listed = jobstore.list_vms(vc)
        except Unreachable as exc:
            print(f"vbm vm ls: {exc}", file=sys.stderr)
            failed += 1
            continue
        for vm in sorted(listed, key=lambda v: v.name):
            size = human_bytes(sum(d.capacity for d in vm.disks))
            yes = "yes" if (vc.name, vm.moref) in protected else "no"
            cbt = "on " if vm.cbt_enabled else "off"
            print(
                f"{vc.name[:12]:<12} {vm.name[:32]:<32} {vm.moref:<10} {vm.power_state[:11]:<11}"
                f" {len(vm.disks):>5} {size:>10}  {cbt}  {yes}"
            )
    return 1 if failed else 0


def _ls_json(
    vcenters: list[VCenterSettings], sessions: sessionmaker[Session], settings: Settings, every: bool
) -> int:
    """The API's answer: one asked for by name that does not answer is an error (502 there);
    of all, those that do not answer (or whose stored password cannot be read) are named in it."""
    asked: list[tuple[VCenterSettings, list[VMInfo] | Unreachable]] = []
    for vc in vcenters:
        try:
            asked.append((vc, jobstore.list_vms(vc)))
        except Unreachable as exc:
            if not every:
                raise
            asked.append((vc, exc))
    broken: dict[str, Exception] = {}
    if every:
        with sessions() as s:
            broken = dict(vcstore.usable(s, settings)[1])
    found = vmstore.listing(asked, broken)
    print(json.dumps(found, indent=2))
    return 1 if found["unreachable"] else 0
