"""Small, size-limited filesystems (tmpfs) for disk-full tests: writes past the size get ENOSPC.

``small_fs`` mounts a 4 MiB tmpfs at ``<tmp_path>/small``; ``small_fs_factory(size)`` mounts
more of any size (``"512k"``, ``"16m"``). Both unmount afterwards (lazily if busy). Mounting
needs root (CAP_SYS_ADMIN): without it the test fails with a clear message, it never skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.plugins.procs import fail_missing

__all__ = ["SmallFsFactory", "mount_tmpfs", "unmount"]

SmallFsFactory = Callable[[str], Path]

_SIZE = re.compile(r"^\d+[kmg]?$", re.IGNORECASE)
ROOT_HINT = (
    "size-limited tmpfs mounts need root (CAP_SYS_ADMIN): run the tests as root, as `make test` "
    "does in CI and in the dev container"
)


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if not path:
        fail_missing(f"`{name}` not found: install util-linux (`apt-get install -y mount`)")
    return path


def mount_tmpfs(target: Path, size: str = "4m") -> Path:
    """Mount a tmpfs of ``size`` (tmpfs syntax: ``4m``, ``512k``) at ``target`` (created)."""
    if not _SIZE.match(size):
        raise ValueError(f"tmpfs size {size!r}: use a number with an optional k/m/g suffix")
    if os.geteuid() != 0:
        fail_missing(f"cannot mount a tmpfs at {target} as uid {os.geteuid()}: {ROOT_HINT}")
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [_tool("mount"), "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        fail_missing(
            f"`mount -t tmpfs -o size={size} tmpfs {target}` failed "
            f"({result.returncode}): {result.stderr.strip()}: {ROOT_HINT} "
            "(in a container, it also needs CAP_SYS_ADMIN, e.g. `--privileged`)"
        )
    return target


def unmount(target: Path) -> None:
    """Unmount ``target``; if it is busy (an open file), detach it lazily (``umount -l``)."""
    if not os.path.ismount(target):
        return
    umount = _tool("umount")
    result = subprocess.run([umount, str(target)], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0 and os.path.ismount(target):
        subprocess.run([umount, "-l", str(target)], capture_output=True, text=True, timeout=30, check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted at ``<tmp_path>/small`` (mode 0755); unmounted after the test."""
    target = mount_tmpfs(tmp_path / "small", "4m")
    try:
        yield target
    finally:
        unmount(target)


@pytest.fixture
def small_fs_factory(tmp_path: Path) -> Iterator[SmallFsFactory]:
    """``small_fs_factory("16m") -> Path``: mount tmpfs filesystems of any size; all unmounted."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        target = mount_tmpfs(tmp_path / f"small-{len(mounted)}-{size}", size)
        mounted.append(target)
        return target

    try:
        yield make
    finally:
        for target in reversed(mounted):
            unmount(target)
