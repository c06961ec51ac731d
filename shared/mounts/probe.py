"""What state a mount point is in, without ever hanging vbm, and the guard that keeps writes out
of a mount point whose share is not there.

- mounted: /proc/self/mountinfo lists the directory as a mount point, and a stat and a read of
  it answer within `timeout` seconds;
- stale: listed, but the stat fails (a FUSE server that died: ENOTCONN; an NFS server that went
  away: ESTALE, EIO) or does not answer in time (a hard NFS mount of a hung server blocks in the
  kernel: the stat runs in a daemon thread that is left behind, never awaited);
- unmounted: not listed.

The guard that refuses repositories under an unmounted or stale mount point is
shared/repo/mountguard.py (the repository's backends call it).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from shared.repo.mountguard import TimedOut, timed

MOUNTINFO = Path("/proc/self/mountinfo")


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
        timed(lambda: _look(point), timeout, str(point))
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
