"""What state a mount point is in, without ever hanging vbm, and the guard that keeps writes out
of a mount point whose share is not there.

- mounted: /proc/self/mountinfo lists the directory as a mount point, and a stat and a read of
  it answer within `timeout` seconds;
- stale: listed, but the stat fails (a FUSE server that died: ENOTCONN; an NFS server that went
  away: ESTALE, EIO) or does not answer in time (a hard NFS mount of a hung server blocks in the
  kernel: the stat runs in a daemon thread that is left behind, never awaited);
- unmounted: not listed.

The guard: before the manager mounts a share it leaves a marker file (`.vbm-mount-point`) in the
empty directory underneath. While the share is mounted the marker is hidden by it; when it is
visible, the path is the local disk under an unmounted mount point, and `check_location` refuses
(`NotMounted`): a repository is never opened there, so a backup never fills the local disk
believing it writes to the share.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from shared.repo.errors import Misconfigured

T = TypeVar("T")
MOUNTINFO = Path("/proc/self/mountinfo")
MARKER = ".vbm-mount-point"


class TimedOut(Exception):
    """A file system call did not answer within its time (a hung server)."""


class NotMounted(Misconfigured):
    """A repository path is under a managed mount point whose share is not mounted, or is stale:
    nothing is written there (only a person can fix it)."""


def timed(work: Callable[[], T], timeout: float) -> T:
    """`work()` in a daemon thread: its result, its exception, or TimedOut after `timeout` s (the
    thread is left blocked; a process exits past it)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="vbm-mount-stat", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimedOut(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\040 and the like."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts(mountinfo: Path = MOUNTINFO) -> dict[str, tuple[str, str]]:
    """Each mount point of this process's namespace: (file system type, source)."""
    found = {}
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        parts, rest = left.split(), right.split()
        if len(parts) >= 5 and len(rest) >= 2:
            found[_unescape(parts[4])] = (rest[0], _unescape(rest[1]))
    return found


def is_mounted(point: Path) -> bool:
    return str(point) in mounts()


def _look(point: Path) -> None:
    """A stat and a directory read: the attributes alone may come from the kernel's cache."""
    os.stat(point)
    with os.scandir(point) as entries:
        next(entries, None)


def state(point: Path, timeout: float) -> tuple[str, str]:
    """("mounted" | "unmounted" | "stale", what was seen) for the mount point `point`."""
    listed = mounts().get(str(point))
    if listed is None:
        return "unmounted", f"{point} is not a mount point"
    try:
        timed(lambda: _look(point), timeout)
    except TimedOut:
        return (
            "stale",
            f"{point} does not answer (a stat took over {timeout:g} s): the server is gone or hung",
        )
    except OSError as exc:
        return "stale", f"{point} cannot be read: {exc.strerror or exc}"
    return "mounted", f"{listed[1]} ({listed[0]}) is mounted there"


def writable(point: Path, timeout: float) -> str | None:
    """Write, read back and delete a probe file in `point`: None when all worked, else what failed."""
    probe = point / f".vbm-probe-{uuid.uuid4().hex[:12]}"
    data = uuid.uuid4().bytes

    def work() -> str | None:
        try:
            probe.write_bytes(data)
        except OSError as exc:
            return f"cannot write in {point}: {exc.strerror or exc}"
        try:
            if probe.read_bytes() != data:
                return f"{point}: a probe file read back differs from what was written"
        except OSError as exc:
            return f"cannot read back a file written in {point}: {exc.strerror or exc}"
        finally:
            try:
                probe.unlink()
            except OSError as exc:
                return f"cannot delete a file in {point}: {exc.strerror or exc}"
        return None

    try:
        return timed(work, timeout)
    except TimedOut:
        return f"{point} does not answer (writing a probe file took over {timeout:g} s)"


def _unmounted_ancestor(path: Path) -> Path | None:
    """The nearest directory at or above `path` whose marker is visible (its share not mounted)."""
    for folder in (path, *path.parents):
        if (folder / MARKER).is_file():
            return folder
    return None


def check_location(path: str | Path, timeout: float = 5.0) -> None:
    """Refuse (NotMounted) a repository path under a managed mount point that is not mounted or
    does not answer; a path under no managed mount point passes."""
    where = Path(os.path.abspath(path))
    try:
        folder = timed(lambda: _unmounted_ancestor(where), timeout)
    except TimedOut:
        raise NotMounted(
            f"repository {where}: its file system does not answer (over {timeout:g} s): a stale"
            " mount; nothing was written. Check the server, then remount it (vbm mount mount NAME)"
        ) from None
    except OSError as exc:  # ENOTCONN, ESTALE: a mount whose server went away
        raise NotMounted(
            f"repository {where}: its file system cannot be read ({exc.strerror or exc}): a stale"
            " mount; nothing was written. Remount it (vbm mount unmount NAME, then vbm mount mount NAME)"
        ) from None
    if folder is not None:
        name = folder.name
        raise NotMounted(
            f"repository {where} is on mount {name!r}, which is not mounted ({folder} is the local"
            f" disk underneath): nothing was written there. Mount it first (vbm mount mount {name},"
            " or Settings > Mounts) and try again"
        )
