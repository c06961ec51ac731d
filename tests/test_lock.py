"""The venv the suite runs in is exactly the lock, and the lock covers pyproject.toml.

A package installed or upgraded by hand could make the suite green on one machine and red on the
next (a new machine installs only the lock), so any difference fails here with what differs.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DEV_LOCK = ROOT / "requirements" / "dev.txt"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
PROJECT = "vsphere-backup-manager"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]+))?")
HOW = (
    "The venv must hold exactly what the lock says: `rm -rf .venv && make venv` installs it. "
    "To change a version, change pyproject.toml's range if needed and run `make lock` "
    "(`make lock-upgrade PACKAGE=name` for a newer release), then the whole suite on the new lock."
)


def locked(path: Path) -> dict[str, str]:
    """Package -> version for every pin of a lock file whose marker holds on this machine."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match is None:
            continue
        marker = match["marker"]
        if marker and not Marker(marker.strip()).evaluate():
            continue
        pins[canonicalize_name(match["name"])] = match["version"]
    return pins


def installed() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonicalize_name(name)] = dist.version
    found.pop(PROJECT, None)
    return found


def differences(lock: dict[str, str], venv: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(lock.keys() | venv.keys()):
        want, have = lock.get(name), venv.get(name)
        if want is None:
            lines.append(f"  {name} {have}: installed, but not in the lock")
        elif have is None:
            lines.append(f"  {name}: the lock says {want}, not installed")
        elif Version(want) != Version(have):
            lines.append(f"  {name}: installed {have}, the lock says {want}")
    return lines


def test_the_venv_is_exactly_the_dev_lock() -> None:
    diff = differences(locked(DEV_LOCK), installed())
    assert not diff, f"the venv differs from {DEV_LOCK.relative_to(ROOT)}:\n" + "\n".join(diff) + f"\n{HOW}"


def test_the_guard_names_what_differs() -> None:
    lock = {"cryptography": "50.0.2", "pytest": "9.2.0", "uv": "0.13.9"}
    venv = {"cryptography": "51.0.1", "pytest": "9.2.0", "requests": "2.34.2"}
    assert differences(lock, venv) == [
        "  cryptography: installed 51.0.1, the lock says 50.0.2",
        "  requests 2.34.2: installed, but not in the lock",
        "  uv: the lock says 0.13.9, not installed",
    ]


def test_runtime_lock_agrees_with_the_dev_lock() -> None:
    dev, runtime = locked(DEV_LOCK), locked(RUNTIME_LOCK)
    assert runtime, "requirements/runtime.txt pins nothing"
    wrong = {name: (version, dev.get(name)) for name, version in runtime.items() if dev.get(name) != version}
    assert not wrong, f"runtime and dev locks disagree (runtime, dev): {wrong}: run `make lock`"


def test_the_lock_covers_pyproject() -> None:
    """A dependency added to pyproject.toml without `make lock` would install nothing anywhere."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {
        RUNTIME_LOCK: [*project["project"]["dependencies"], *project["dependency-groups"]["build"]],
        DEV_LOCK: [
            *project["project"]["dependencies"],
            *project["project"]["optional-dependencies"]["dev"],
            *project["dependency-groups"]["build"],
        ],
    }
    problems = []
    for lock_path, requirements in wanted.items():
        pins = locked(lock_path)
        for text in requirements:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate():
                continue
            version = pins.get(canonicalize_name(req.name))
            if version is None:
                problems.append(f"{req.name}: not in {lock_path.name}")
            elif not req.specifier.contains(version, prereleases=True):
                problems.append(f"{req.name}: {lock_path.name} has {version}, pyproject: {req.specifier}")
    assert not problems, "the lock is behind pyproject.toml (run `make lock`):\n  " + "\n  ".join(problems)
