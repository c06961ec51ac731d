"""``python -m lab``: run a vSphere lab for demos until Ctrl-C (``vbm lab`` calls ``main``).

``python -m lab --spec FILE`` runs the lab a spec file describes (docs/lab.md, lab/specs/);
``python -m lab disk-sha256 VM DISK [--snapshot MOREF] [--url URL]`` prints the SHA-256 of a
disk's content as the guest sees it, from a running lab (by default the one of ``vbm up``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import FrameType

from lab.launcher import DiskSpec, LabError, LabSpec, VMSpec, build_lab, start_lab
from lab.spec import SpecError, load_spec
from lab.spec import parse_size as _parse_size

# flags that shape the lab (dest -> flag): with --spec, the file does that instead
_SHAPING = {
    "vms": "--vms",
    "disks": "--disks",
    "disk_size": "--disk-size",
    "layout": "--layout",
    "seed": "--seed",
    "prefix": "--prefix",
    "cbt": "--no-cbt",
    "powered_off": "--powered-off",
    "cbt_max_areas": "--cbt-max-areas",
}
_DEFAULTS = {
    "vms": 2,
    "disks": 2,
    "layout": "mixed",
    "seed": 0,
    "prefix": "vm",
    "cbt": True,
    "powered_off": False,
    "cbt_max_areas": 0,
    "username": "user",
    "password": "pass",
}


def parse_size(text: str) -> int:
    """'64M', '1G', '5123K', '1048576' -> bytes (multiple of 1 KiB)."""
    try:
        return _parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    p = argparse.ArgumentParser(
        prog="python -m lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--spec", type=Path, help="a lab spec file (.json or .toml): the whole lab")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--vms", type=int, help="number of VMs (default 2)")
    p.add_argument("--disks", type=int, help="disks per VM (default 2)")
    p.add_argument(
        "--disk-size",
        type=parse_size,
        action="append",
        help="disk size, e.g. 64M (repeat to cycle sizes over a VM's disks)",
    )
    p.add_argument("--layout", choices=["mixed", "zero", "random"])
    p.add_argument("--seed", type=int)
    p.add_argument("--prefix", help="VM name prefix (default vm -> vm1, vm2...)")
    p.add_argument("--no-cbt", dest="cbt", action="store_false", default=None, help="start with CBT off")
    p.add_argument("--powered-off", action="store_true", default=None)
    p.add_argument("--cbt-max-areas", type=int, help="areas per reply (0: no cap)")
    p.add_argument("--username", help="default user (or the spec file's)")
    p.add_argument("--password", help="default pass (or the spec file's)")
    p.add_argument("--data-dir", type=Path, help="datastore root (kept); default: a temp dir")
    p.add_argument("--json", action="store_true", help="print the inventory as JSON")
    return p


def sha_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab disk-sha256",
        description="Print the SHA-256 of a disk's content as the guest sees it (computed by the lab).",
    )
    p.add_argument("vm", help="VM name or moref")
    p.add_argument("disk", help="device key (2000, 2001...) or index (0, 1...)")
    p.add_argument("--snapshot", help="a snapshot's moref: its frozen content instead of the current one")
    p.add_argument(
        "--url",
        help="the lab's URL (http://127.0.0.1:PORT); default: the lab `vbm up` runs "
        "(<VBM_DATA_DIR or ./var>/lab/vcenter.json)",
    )
    return p


def running_lab_url() -> str:
    """The URL of the lab `vbm up` runs on this data directory, from its vcenter.json."""
    data_dir = Path(os.environ.get("VBM_DATA_DIR") or "var")
    path = data_dir / "lab" / "vcenter.json"
    try:
        url = str(json.loads(path.read_text())["url"])
    except FileNotFoundError:
        raise LabError(
            f"no running lab found: {path} does not exist. Start one with `vbm up` (it writes that file), "
            "or run `python -m lab` and pass its address with --url http://127.0.0.1:PORT"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LabError(f"cannot read the running lab's address from {path}: {e}") from None
    return url.removesuffix("/").removesuffix("/sdk")


def disk_sha256(argv: list[str]) -> int:
    args = sha_parser().parse_args(argv)
    try:
        url = (args.url or running_lab_url()).rstrip("/").removesuffix("/sdk")
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 2
    vm, disk = (urllib.parse.quote(x, safe="") for x in (args.vm, args.disk))
    path = f"/lab/vms/{vm}/disks/{disk}/sha256"
    if args.snapshot:
        path += "?" + urllib.parse.urlencode({"snapshot": args.snapshot})
    try:
        with urllib.request.urlopen(url + path, timeout=600) as resp:
            result = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        e.close()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        print(f"lab: {detail} (HTTP {e.code})", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"lab: the lab at {url} does not answer ({e}); is it still running?", file=sys.stderr)
        return 1
    print(result["sha256"])
    return 0


def resolve_spec(args: argparse.Namespace) -> LabSpec:
    if args.spec is not None:
        given = [flag for name, flag in _SHAPING.items() if getattr(args, name) is not None]
        if given:
            raise SpecError(f"{', '.join(given)}: not with --spec (the spec file describes the lab)")
        spec = load_spec(args.spec)
        overrides = {k: getattr(args, k) for k in ("username", "password") if getattr(args, k) is not None}
        if overrides:
            spec = replace(spec, **overrides)
        return spec
    for name, value in _DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return build_spec(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["disk-sha256"]:
        return disk_sha256(argv[1:])
    args = parser().parse_args(argv)
    try:
        spec = resolve_spec(args)
    except SpecError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 2
    workdir = args.data_dir or Path(tempfile.mkdtemp(prefix="vbm-lab-"))
    try:
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
            stores = ", ".join(f"{d['name']} at {d['dir']}" for d in lab.datastores)
            print(f"datacenter {lab.datacenter}, datastore {stores}")
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
