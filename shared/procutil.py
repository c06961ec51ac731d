"""Small process helpers shared by `vbm up`, the lab launcher and the test fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shutil
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


class MissingProgram(Exception):
    """A program vbm needs is not installed; the message names the install step."""


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """In a child (as preexec_fn): die with `sig` when the parent dies, so nothing is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


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
