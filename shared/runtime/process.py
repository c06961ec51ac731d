"""Small process helpers shared by `vbm up`, the lab launcher and the test fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

PR_SET_PDEATHSIG = 1

# Loaded once in the parent: between fork and exec the child should do as little as possible.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - every Linux libc has prctl
    _LIBC = None


class MissingProgram(Exception):
    """A program vbm needs is not installed; the message names the install step."""


def _die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in the child
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died between fork and prctl
        os._exit(1)


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes the child die (SIGKILL) when this process dies.

    The signal fires when the *thread* that started the child exits: start children from a
    thread that lives as long as they should (the main thread or the event loop's).
    """
    return functools.partial(_die_with_parent, os.getpid())


def find_program(name: str, install_hint: str) -> str:
    """Find `name` beside this Python first (pip-installed servers live there), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise MissingProgram(f"{name} is not installed: {install_hint}")


async def tcp_reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def private_data_dir(path: Path) -> None:
    """The data directory holds the database, keys and backups: owner only (0700), and every
    file vbm creates from now on 0600 (umask 077, inherited by the children)."""
    os.umask(0o077)
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # not ours to change: leave it, it is the admin's
        path.chmod(0o700)


# The environment a child that is not a vbm service (NATS, the lab) gets: nothing of vbm's.
BARE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


def bare_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What NATS and the lab get: the basics of a process environment, nothing of vbm's."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k in BARE_ENV}
