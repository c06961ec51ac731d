"""What `vbm job create` and `vbm job edit` say about a job, as the body of the REST API.

Both build a `JobSpec` body (the same validation and the same store functions as
`POST`/`PUT /api/v1/jobs`): create from nothing, edit from the job as it is, changing only what
the command line names.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from shared.model.retention import Policy

SCHEDULE_HELP = "'cron:0 2 * * *', 'every:240' (minutes), 'daily@02:30', 'weekly@03:00', 'monthly@..'"
KEEP = tuple(name for name in Policy.model_fields if name.startswith("keep_"))
_MOREF = re.compile(r"^vm-\d+$")


def parse_schedule(text: str, timezone: str = "UTC") -> dict[str, Any]:
    """'cron:EXPR' | 'every:MINUTES' | 'PRESET@HH:MM' (or just 'PRESET') as a Schedule's data."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "cron":
        return {"kind": "cron", "cron": rest.strip(), "timezone": timezone}
    if sep and kind == "every":
        if not (rest.strip().isascii() and rest.strip().isdigit()):
            raise ValueError(f"schedule {text!r}: every: needs whole minutes, e.g. every:240")
        return {"kind": "interval", "every_minutes": int(rest), "timezone": timezone}
    preset, _, at = text.partition("@")
    data: dict[str, Any] = {"kind": "preset", "preset": preset.strip(), "timezone": timezone}
    if at:
        data["at"] = at.strip()
    return data


def vm_ref(text: str) -> dict[str, str]:
    return {"moref": text} if _MOREF.match(text) else {"name": text}


def add_spec_args(p: argparse.ArgumentParser, *, editing: bool) -> None:
    """The options create and edit share: schedule, options, retention, copies, notifications."""
    p.add_argument("--schedule", help=SCHEDULE_HELP)
    p.add_argument("--timezone", help="of the schedule (IANA name, default UTC)")
    p.add_argument("--repository", help="repository location (default: the setting)")
    p.add_argument(
        "--cbt", action=argparse.BooleanOptionalAction, default=None, help="use Changed Block Tracking"
    )
    p.add_argument("--quiesce", action=argparse.BooleanOptionalAction, default=None, help="quiesce the guest")
    for name in KEEP:
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=int, metavar="N", help=f"retention: {name.replace('_', ' ')}")
    p.add_argument(
        "--replicate-to",
        action="append",
        metavar="LOCATION",
        help="copy every verified restore point to this secondary repository (repeatable)",
    )
    p.add_argument("--notify", action="append", metavar="CHANNEL", help="also tell this channel (repeatable)")
    p.add_argument(
        "--notify-on",
        action="append",
        choices=("success", "warning", "failure"),
        help="outcomes of this job to send (repeatable; default: each channel's own)",
    )
    for criterion, example in (
        ("folder", "prod/web"), ("cluster", "Cluster-A"), ("host", "esx01.example.com"),
        ("pool", "Production"), ("datastore", "ds-ssd-01"), ("tag", "Backup/Gold"), ("name", "web-*"),
    ):  # fmt: skip
        p.add_argument(
            f"--select-{criterion}",
            action="append",
            metavar="VALUE",
            help=f"every VM whose {criterion} is VALUE at each run (e.g. {example}; repeatable)",
        )
    p.add_argument("--exclude-vm", action="append", metavar="NAME_OR_MOREF", help="never back up this VM")
    p.add_argument(
        "--exclude-disk",
        action="append",
        metavar="VM:KEY",
        help="leave out this disk of a VM (e.g. db-01:2001)",
    )
    if editing:
        p.add_argument("--name", dest="new_name", help="rename the job")
        p.add_argument("--clear-select", action="store_true", help="drop the job's selectors and exclusions")
        p.add_argument("--vm", action="append", metavar="NAME_OR_MOREF", help="the VMs (replaces the list)")
        p.add_argument("--add-vm", action="append", default=[], metavar="NAME_OR_MOREF")
        p.add_argument("--remove-vm", action="append", default=[], metavar="NAME_OR_MOREF")
        p.add_argument("--no-schedule", action="store_true", help="run only when asked")
        p.add_argument(
            "--default-retention",
            action="store_true",
            help="drop the job's retention: the global one applies",
        )
        p.add_argument("--no-replicate", action="store_true", help="no secondary repositories")


def apply_spec_args(body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """`body` (a job's spec as the API shows it) with what the command line changes."""
    options = body.setdefault("options", {})
    if args.schedule:
        zone = args.timezone or (body.get("schedule") or {}).get("timezone", "UTC")
        body["schedule"] = parse_schedule(args.schedule, zone)
    elif args.timezone and body.get("schedule"):
        body["schedule"] = {**body["schedule"], "timezone": args.timezone}
    if getattr(args, "no_schedule", False):
        body["schedule"] = None
    if args.repository is not None:
        body["repository"] = args.repository
    for name in ("cbt", "quiesce"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    retention = {} if getattr(args, "default_retention", False) else dict(body.get("retention") or {})
    for name in KEEP:
        value = getattr(args, name)
        if value is not None:
            retention[name] = value if value > 0 else None
    body["retention"] = {k: v for k, v in retention.items() if v is not None}
    if getattr(args, "no_replicate", False):
        options["replicate_to"] = []
    if args.replicate_to:
        options["replicate_to"] = list(args.replicate_to)
    notify = dict(options.get("notify") or {})
    if args.notify:
        notify["channels"] = list(args.notify)
    if args.notify_on:
        notify["on"] = list(args.notify_on)
    options["notify"] = notify
    if getattr(args, "clear_select", False):
        body["select"], body["exclude"] = [], {}
    select = list(body.get("select") or [])
    for criterion in ("folder", "cluster", "host", "pool", "datastore", "tag", "name"):
        for value in getattr(args, f"select_{criterion}") or []:
            select.append({"resource_pool" if criterion == "pool" else criterion: value})
    body["select"] = select
    exclude = dict(body.get("exclude") or {})
    exclude_vms = list(exclude.get("vms") or []) + [vm_ref(v) for v in args.exclude_vm or []]
    disks = list(exclude.get("disks") or [])
    for text in args.exclude_disk or []:
        vm, _, key = text.rpartition(":")
        if not vm or not (key.isascii() and key.isdigit()):
            raise ValueError(f"--exclude-disk {text!r}: write VM:KEY, e.g. db-01:2001")
        disks.append({"vm": vm_ref(vm), "keys": [int(key)]})
    body["exclude"] = {"vms": exclude_vms, "disks": disks}
    return body


def kept_ref(vm: dict[str, Any]) -> dict[str, str]:
    """A VM of the job as it is: its moref, and its vCenter when it is not the job's (morefs
    repeat across vCenters: without it, the moref would name another VM)."""
    return {"moref": vm["moref"], **({"vcenter": vm["vcenter"]} if vm.get("vcenter") else {})}


def edited_vms(current: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The job's VMs after --vm (replace), --add-vm and --remove-vm (by name or moref; a name
    held on several vCenters removes each)."""
    own = {v["moref"]: v.get("name") for v in current if not v.get("vcenter")}  # the job's vCenter's
    if args.vm:
        held = [(ref := vm_ref(v), own.get(ref.get("moref", ""))) for v in args.vm]
    else:
        held = [(kept_ref(v), v.get("name")) for v in current]

    def called(ref: dict[str, str], name: str | None) -> set[str | None]:
        return {ref.get("moref"), ref.get("name"), name}

    gone = set(args.remove_vm)
    missing = [r for r in gone if not any(r in called(*h) for h in held)]
    if missing:
        raise ValueError(f"--remove-vm: the job holds no VM {', '.join(map(repr, sorted(missing)))}")
    vms: list[dict[str, Any]] = [ref for ref, name in held if not called(ref, name) & gone]
    vms += [vm_ref(v) for v in args.add_vm]
    return vms
