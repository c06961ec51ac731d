"""``python -m lab``: run a vSphere lab for demos until Ctrl-C (``vbm lab`` calls ``main``)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from lab.launcher import DiskSpec, LabError, LabSpec, VMSpec, build_lab, start_lab

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    """'64M', '1G', '5123K', '1048576' -> bytes (multiple of 1 KiB)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64M, 1G, 5123K)")
    size = int(m.group(1)) * _UNITS[m.group(2)]
    if size <= 0 or size % 1024:
        raise argparse.ArgumentTypeError(f"size {text!r} must be a positive multiple of 1 KiB")
    return size


def build_spec(args: argparse.Namespace) -> LabSpec:
    sizes: list[int] = args.disk_size or [64 * 1024**2]
    vms = []
    for i in range(args.vms):
        disks = tuple(
            DiskSpec(size=sizes[j % len(sizes)], seed=args.seed * 1000 + i * 100 + j, layout=args.layout)
            for j in range(args.disks)
        )
        vms.append(
            VMSpec(name=f"{args.prefix}{i + 1}", disks=disks, cbt=args.cbt, power_on=not args.powered_off)
        )
    return LabSpec(
        vms=tuple(vms), cbt_max_areas=args.cbt_max_areas, username=args.username, password=args.password
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--vms", type=int, default=2, help="number of VMs (default 2)")
    p.add_argument("--disks", type=int, default=2, help="disks per VM (default 2)")
    p.add_argument(
        "--disk-size",
        type=parse_size,
        action="append",
        help="disk size, e.g. 64M (repeat to cycle sizes over a VM's disks)",
    )
    p.add_argument("--layout", choices=["mixed", "zero", "random"], default="mixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default="vm", help="VM name prefix (default vm -> vm1, vm2...)")
    p.add_argument("--no-cbt", dest="cbt", action="store_false", help="start with CBT off")
    p.add_argument("--powered-off", action="store_true")
    p.add_argument("--cbt-max-areas", type=int, default=0, help="areas per reply (0: no cap)")
    p.add_argument("--username", default="user")
    p.add_argument("--password", default="pass")
    p.add_argument("--data-dir", type=Path, help="datastore root (kept); default: a temp dir")
    p.add_argument("--json", action="store_true", help="print the inventory as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    workdir = args.data_dir or Path(tempfile.mkdtemp(prefix="vbm-lab-"))
    try:
        spec = build_spec(args)
        print("building the lab (cached)...", file=sys.stderr, flush=True)
        lab = start_lab(spec, workdir, port=args.port, binary=build_lab())
    except (LabError, OSError) as e:
        print(f"lab: {e}", file=sys.stderr)
        if args.data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.json:
            print(json.dumps(lab.inventory), flush=True)
        else:
            print(
                f"vSphere lab listening on {lab.sdk_url} (user {lab.username!r}, password {lab.password!r})"
            )
            print(f"datacenter {lab.datacenter}, datastore {lab.datastore} at {lab.datastore_dir}")
            for vm in lab.inventory["vms"]:
                sizes = ", ".join(f"{d['key']}: {d['capacity']} B" for d in vm["disks"])
                print(f"  {vm['name']} ({vm['moref']}) disks {sizes}")
            print(f"control API: {lab.url}/lab/state (see docs/lab.md); Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            if not lab.alive:
                print(f"lab exited:\n{lab.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        lab.stop()
        if args.data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
