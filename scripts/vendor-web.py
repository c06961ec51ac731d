#!/usr/bin/env python3
"""Vendors the gateway's front-end libraries into services/gateway/static/vendor, so that `vbm up`
serves them itself: offline, with no CDN and no npm when vbm runs. The files are committed; this
script is only run to add a library or move one to another version.

    scripts/vendor-web.py           npm ci web/package-lock.json (in a temporary folder), copy
                                    the files of FILES below and write VENDORED.json
    scripts/vendor-web.py --lock    after editing web/package.json: resolve web/package-lock.json
                                    again (exact versions, integrity hashes), then vendor

web/package.json pins each library to an exact version; web/package-lock.json pins every package
with its integrity hash, which `npm ci` checks. Peer dependencies are not installed (the bundles
copied are self-contained) and no install script runs. VENDORED.json records, for each library,
its version, npm's integrity hash of its tarball and the SHA-256 of each file copied:
tests/gateway/test_vendored.py checks the files against it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
VENDOR = ROOT / "services" / "gateway" / "static" / "vendor"

# package -> {file in the package: name under static/vendor/<package>/}; its licence is added.
FILES: dict[str, dict[str, str]] = {
    "chart.js": {"dist/chart.umd.min.js": "chart.umd.min.js"},  # the UI's charts
    "htmx-ext-sse": {"dist/sse.min.js": "sse.min.js"},  # htmx's Server-Sent Events extension
    "htmx.org": {"dist/htmx.min.js": "htmx.min.js"},  # the UI's partial updates
    "redoc": {"bundles/redoc.standalone.js": "redoc.standalone.js"},  # the API reference
}

NPM_FLAGS = ["--ignore-scripts", "--legacy-peer-deps", "--no-audit", "--no-fund", "--loglevel=error"]
LICENCES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lock", action="store_true", help="resolve web/package-lock.json again first")
    args = parser.parse_args()
    manifest = json.loads((WEB / "package.json").read_text())
    wanted = manifest["dependencies"]
    if set(wanted) != set(FILES):
        sys.exit(f"vendor-web: web/package.json names {sorted(wanted)}, FILES names {sorted(FILES)}")
    if args.lock:
        npm(WEB, "install", "--package-lock-only")
    lock = json.loads((WEB / "package-lock.json").read_text())
    with tempfile.TemporaryDirectory(prefix="vbm-web-") as tmp:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(WEB / name, Path(tmp) / name)
        npm(Path(tmp), "ci")
        packages = [
            vendor(Path(tmp) / "node_modules" / name, name, wanted[name], lock) for name in sorted(FILES)
        ]
    out = VENDOR / "VENDORED.json"
    out.write_text(json.dumps({"packages": packages}, indent=2) + "\n")
    print(f"vendor-web: wrote {out.relative_to(ROOT)}")
    return 0


def npm(where: Path, *command: str) -> None:
    print(f"vendor-web: npm {' '.join(command)} in {where}")
    subprocess.run(["npm", *command, *NPM_FLAGS], cwd=where, check=True)


def vendor(installed: Path, name: str, version: str, lock: dict) -> dict[str, object]:
    """Copy one package's files (and licence) into static/vendor/<name>, replacing what was there."""
    meta = json.loads((installed / "package.json").read_text())
    if meta["version"] != version:
        sys.exit(f"vendor-web: {name} is {meta['version']} in node_modules, web/package.json pins {version}")
    licence = next((installed / f for f in LICENCES if (installed / f).is_file()), None)
    if licence is None:
        sys.exit(f"vendor-web: {name} {version} ships no licence file")
    target = VENDOR / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    copies = {**FILES[name], licence.name: "LICENSE"}
    files = {}
    for source, dest in copies.items():
        shutil.copyfile(installed / source, target / dest)
        files[dest] = hashlib.sha256((target / dest).read_bytes()).hexdigest()
        print(f"vendor-web: {name}/{dest} ({(target / dest).stat().st_size} bytes)")
    return {
        "package": name,
        "version": version,
        "license": meta.get("license", ""),
        "integrity": lock["packages"][f"node_modules/{name}"]["integrity"],
        "files": files,
    }


if __name__ == "__main__":
    sys.exit(main())
