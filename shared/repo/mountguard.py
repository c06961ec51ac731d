"""The guard that keeps repositories out of a mount point whose share is not there
(docs/design.md, "Mounts").

Before the mount manager (shared/mounts/) mounts a share it leaves a marker file
(`.vbm-mount-point`) in the empty directory underneath. While the share is mounted the marker is
hidden by it; when it is visible, the path is the local disk under an unmounted mount point, and
`check_location` refuses (`NotMounted`): a repository is never opened or written there, so a
backup never fills the local disk believing it writes to the share. A path whose file system does
not answer in time, or fails as a mount whose server went away does (ENOTCONN, ESTALE), is
refused too. No database is needed: every process that opens repositories applies it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from shared.repo.errors import Misconfigured

T = TypeVar("T")
MARKER = ".vbm-mount-point"


class TimedOut(Exception):
    """A file system call did not answer within its time (a hung server)."""


class NotMounted(Misconfigured):
    """A repository path is under a managed mount point whose share is not mounted, or is stale:
    nothing is written there (only a person can fix it)."""


_STUCK: dict[str, threading.Thread] = {}  # per key: a call that timed out and still blocks
_STUCK_LOCK = threading.Lock()


def timed(work: Callable[[], T], timeout: float, key: str = "") -> T:
    """`work()` in a daemon thread: its result, its exception, or TimedOut after `timeout` s (the
    thread is left blocked; a process exits past it). With a `key` (a path), while an earlier call
    for it still blocks no other thread is started: TimedOut at once, so a page that shows a hung
    share every few seconds does not pile up blocked threads."""
    if key:
        with _STUCK_LOCK:
            stuck = _STUCK.get(key)
            if stuck is not None and stuck.is_alive():
                raise TimedOut(f"no answer within {timeout:g} s (an earlier call still waits)")
            _STUCK.pop(key, None)
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
        if key:
            with _STUCK_LOCK:
                _STUCK[key] = thread
        raise TimedOut(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


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
        folder = timed(lambda: _unmounted_ancestor(where), timeout, str(where))
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
