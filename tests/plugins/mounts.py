"""The mount manager's stand-in programs (tests/plugins/mount_stand_in.py) as a fixture:
`stand_in.settings(data_dir)` are Settings whose `mounts` run it; `stand_in.map(source, dir)`
says what a source mounts as; `stand_in.calls()` is what it was given, in order. Every mount
left under the test's data directory is unmounted (lazily) at the end.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.mounts.probe import mounts
from shared.settings import Settings

__all__ = ["StandIn"]

SCRIPT = Path(__file__).with_name("mount_stand_in.py")


@dataclass
class StandIn:
    root: Path

    @property
    def log(self) -> Path:
        return self.root / "calls.jsonl"

    @property
    def map_file(self) -> Path:
        return self.root / "map.json"

    @property
    def mount_command(self) -> str:
        return shlex.join(
            [sys.executable, str(SCRIPT), "mount", "--log", str(self.log), "--map", str(self.map_file)]
        )

    @property
    def umount_command(self) -> str:
        return shlex.join([sys.executable, str(SCRIPT), "umount", "--log", str(self.log)])

    def mounts_section(self, **extra: Any) -> dict[str, Any]:
        return {"mount_command": self.mount_command, "umount_command": self.umount_command, **extra}

    def settings(self, data_dir: Path, **extra: Any) -> Settings:
        return Settings(data_dir=data_dir, mounts=self.mounts_section(**extra))  # type: ignore[arg-type]

    def map(self, source: str, target: str | Path) -> None:
        current = json.loads(self.map_file.read_text()) if self.map_file.exists() else {}
        current[source] = str(target)
        self.map_file.write_text(json.dumps(current))

    def smbnetfs_home(self) -> str:
        """A HOME for smbnetfs (its config, 0600 as it demands): map a source to the result."""
        home = self.root / "smbnetfs"
        (home / ".smb").mkdir(parents=True, exist_ok=True)
        conf = home / ".smb" / "smbnetfs.conf"
        conf.write_text("smb_query_browsers false\n")  # no network browsing: answers at once
        conf.chmod(0o600)
        return f"smbnetfs:{home}"

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def unmount_under(root: Path) -> None:
    for point in sorted(mounts(), key=len, reverse=True):
        if point.startswith(str(root.resolve()) + "/"):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[StandIn]:
    root = tmp_path / "stand-in"
    root.mkdir()
    try:
        yield StandIn(root)
    finally:
        unmount_under(tmp_path)
