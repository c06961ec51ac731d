"""Mounting and unmounting shares at `<data_dir>/mounts/<name>` with the configured programs
(`mounts.mount_command`, `mounts.umount_command`: mount(8) and umount(8) by default).

Mounting: the directory is made and the marker left in it (shared/repo/mountguard.py: visible means
"not mounted"); for a CIFS login the credentials file is written (0600) and removed as soon as
mount(8) returns, whatever happened; then the mount point must be listed as mounted and answer,
and a probe file is written, read back and deleted. Nothing here raises for a failed mount: each
action returns an `Outcome` saying what happened, in words a person can act on, without secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from shared.mounts.model import (
    Share,
    credentials_file,
    credentials_text,
    mount_argv,
    mount_point,
    umount_argv,
)
from shared.mounts.probe import state, writable
from shared.repo.mountguard import MARKER
from shared.settings import Settings

MARKER_TEXT = (
    "vbm mounts a share here. While you can read this file the share is NOT mounted,\n"
    "and vbm refuses to open repositories below this directory.\n"
)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    state: str  # mounted, unmounted, stale
    message: str
    command: str  # the command line run (never a secret), "" when none ran

    def view(self) -> dict[str, object]:
        return {"ok": self.ok, "state": self.state, "message": self.message, "command": self.command}


def command_line(share: Share, settings: Settings) -> str:
    """The mount command line vbm runs for `share`, as shown to people (it has no secret)."""
    argv = mount_argv(share, settings.data_dir, settings.mounts.mount_command, os.getuid(), os.getgid())
    return shlex.join(argv)


def status(name: str, settings: Settings) -> tuple[str, str]:
    """(state, what was seen) of the mount point of share `name` (blocking up to stat_timeout)."""
    return state(mount_point(settings.data_dir, name), settings.mounts.stat_timeout)


async def run_program(argv: list[str], timeout: float, secret: str = "") -> tuple[int, str]:
    """(exit status, its output and errors in one line) of `argv`; 124 when it ran out of time,
    127 when it cannot be run."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return 127, f"{argv[0]} cannot be run: {exc.strerror or exc}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return 124, f"no answer within {timeout:g} s"
    text = " ".join(out.decode(errors="replace").split())
    if secret:
        text = text.replace(secret, "***")
    return proc.returncode or 0, text[:500]


def _prepare(point: Path) -> None:
    point.mkdir(parents=True, exist_ok=True)
    marker = point / MARKER
    if not marker.exists():
        marker.write_text(MARKER_TEXT)


async def mount(share: Share, settings: Settings) -> Outcome:
    """Mount `share` (a stale mount is let go first), then check it answers and is writable."""
    cfg, point = settings.mounts, mount_point(settings.data_dir, share.name)
    command = command_line(share, settings)
    now, seen = await asyncio.to_thread(state, point, cfg.stat_timeout)
    if now == "mounted":
        return await _probed(share, point, settings, command, f"already mounted: {seen}")
    if now == "stale":
        await run_program(
            umount_argv(share.name, settings.data_dir, cfg.umount_command, lazy=True), cfg.command_timeout
        )
    try:
        await asyncio.to_thread(_prepare, point)
    except OSError as exc:
        return Outcome(False, "unmounted", f"cannot make the mount point {point}: {exc.strerror or exc}", "")
    creds = credentials_file(settings.data_dir, share.name)
    try:
        if share.kind == "cifs" and share.username:
            with contextlib.suppress(FileNotFoundError):
                creds.unlink()  # a leftover could have another mode: always a new file, 0600
            fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(credentials_text(share))
        argv = mount_argv(share, settings.data_dir, cfg.mount_command, os.getuid(), os.getgid())
        code, said = await run_program(argv, cfg.command_timeout, share.password)
    finally:
        with contextlib.suppress(FileNotFoundError):
            creds.unlink()
    if code != 0:
        why = said or "no message"
        return Outcome(False, "unmounted", f"mount of {share.source} failed (exit {code}): {why}", command)
    now, seen = await asyncio.to_thread(state, point, cfg.stat_timeout)
    if now != "mounted":
        return Outcome(False, now, f"mount exited 0, but {seen}", command)
    return await _probed(share, point, settings, command, seen)


async def _probed(share: Share, point: Path, settings: Settings, command: str, seen: str) -> Outcome:
    failed = await asyncio.to_thread(writable, point, settings.mounts.stat_timeout)
    if failed:
        return Outcome(False, "mounted", f"{seen}, but it is not writable: {failed}", command)
    return Outcome(True, "mounted", f"{seen}; a probe file was written, read back and deleted", command)


async def unmount(name: str, settings: Settings) -> Outcome:
    """Unmount the share `name` (lazily when it is stale: a hung server cannot be waited for)."""
    cfg, point = settings.mounts, mount_point(settings.data_dir, name)
    now, seen = await asyncio.to_thread(state, point, cfg.stat_timeout)
    if now == "unmounted":
        return Outcome(True, "unmounted", f"not mounted: {seen}", "")
    argv = umount_argv(name, settings.data_dir, cfg.umount_command, lazy=now == "stale")
    code, said = await run_program(argv, cfg.command_timeout)
    after, seen = await asyncio.to_thread(state, point, cfg.stat_timeout)
    if code != 0 or after != "unmounted":
        why = said or seen
        return Outcome(False, after, f"umount of {point} failed (exit {code}): {why}", shlex.join(argv))
    return Outcome(True, "unmounted", f"{point} unmounted", shlex.join(argv))


async def remount_all(shares: list[Share], settings: Settings) -> dict[str, Outcome]:
    """Mount every share that is not mounted (the gateway's start): each outcome by name."""
    done = {}
    for share in shares:
        done[share.name] = await mount(share, settings)
    return done
