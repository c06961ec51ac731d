"""The mount manager's whole lifecycle through real mounts (as root): the stand-in for mount(8)
records the command line and bind-mounts a directory (the share's stand-in), a tmpfs, or
smbnetfs (FUSE) that the test kills or freezes to make the mount stale."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shared.mounts import manager
from shared.mounts.model import mount_point, validated
from shared.mounts.probe import is_mounted, mounts, state
from shared.repo.locations import NO_CREDENTIALS, open_backend, open_or_init
from shared.repo.mountguard import MARKER, NotMounted, TimedOut, check_location, timed
from tests.plugins.mounts import StandIn

NFS = {"name": "nas", "kind": "nfs", "server": "127.0.0.1", "export": "/export", "options": "hard"}


async def test_mount_probe_refuse_and_remount(stand_in: StandIn, tmp_path: Path) -> None:
    share_dir = tmp_path / "exported"
    share_dir.mkdir()
    stand_in.map("127.0.0.1:/export", share_dir)
    settings = stand_in.settings(tmp_path / "data")
    share = validated(NFS)
    point = mount_point(settings.data_dir, "nas")

    done = await manager.mount(share, settings)
    assert done.ok, done.message
    assert done.state == "mounted" and "probe file was written" in done.message
    assert stand_in.calls()[-1]["argv"] == [
        "mount",
        "-t",
        "nfs",
        "-o",
        "nfsvers=4.1,hard",
        "127.0.0.1:/export",
        str(point),
    ]
    assert done.command.endswith(f"-t nfs -o nfsvers=4.1,hard 127.0.0.1:/export {point}")
    assert is_mounted(point) and state(point, 2)[0] == "mounted"
    assert os.listdir(share_dir) == []  # the probe file is gone again, the marker is underneath

    repo = point / "repo"
    backend = open_backend(str(repo), NO_CREDENTIALS)  # a repository on the share opens
    await open_or_init(backend)
    assert (share_dir / "repo" / "config").exists()

    undone = await manager.unmount("nas", settings)
    # a backend opened before (the mover keeps one per repository) does not write underneath
    with pytest.raises(NotMounted, match="not mounted"):
        await backend.put_if_absent("chunks/ab/" + "ab" * 32, b"data")
    await backend.close()
    assert undone.ok and undone.state == "unmounted"
    assert stand_in.calls()[-1]["argv"] == ["umount", str(point)]
    assert (point / MARKER).is_file()  # the local disk underneath shows its marker
    with pytest.raises(NotMounted) as refused:
        open_backend(str(repo), NO_CREDENTIALS)
    assert "mount 'nas', which is not mounted" in str(refused.value)
    assert "vbm mount mount nas" in str(refused.value)
    assert sorted(os.listdir(point)) == [MARKER]  # nothing was written under the mount point

    again = await manager.remount_all([share], settings)  # as the gateway does on start
    assert again["nas"].ok and is_mounted(point)
    check_location(repo)  # passes again: the share is back
    assert (point / "repo" / "config").exists()


async def test_a_failed_mount_says_why_and_leaves_no_credentials(stand_in: StandIn, tmp_path: Path) -> None:
    stand_in.map("//127.0.0.1/data", "fail:Permission denied")
    settings = stand_in.settings(tmp_path / "data")
    share = validated(
        {
            "name": "win",
            "kind": "cifs",
            "server": "127.0.0.1",
            "share": "data",
            "username": "backup",
            "password": "pw-42",
        }
    )
    done = await manager.mount(share, settings)
    assert not done.ok and done.state == "unmounted"
    assert "exit 32" in done.message and "Permission denied" in done.message
    call = stand_in.calls()[-1]
    creds = settings.data_dir.resolve() / "mounts" / ".win.credentials"
    assert call["argv"][-1] == f"credentials={creds},vers=3.0,uid={os.getuid()},gid={os.getgid()}"
    assert call["credentials_mode"] == "0o600"
    assert call["credentials"][0] == "username=backup" and call["credentials"][1].startswith(
        "password=sha256:"
    )
    assert not creds.exists()  # removed once mount returned
    assert "pw-42" not in done.message + done.command


def _smbnetfs_pid(point: Path) -> int:
    out = subprocess.run(["pgrep", "-f", f"smbnetfs {point}"], capture_output=True, text=True).stdout.split()
    assert out, "smbnetfs is not running"
    return int(out[0])


async def test_stale_mounts_are_seen_and_refused(stand_in: StandIn, tmp_path: Path) -> None:
    stand_in.map("127.0.0.1:/export", stand_in.smbnetfs_home())
    settings = stand_in.settings(tmp_path / "data", stat_timeout=1)
    point = mount_point(settings.data_dir, "nas")
    done = await manager.mount(validated(NFS), settings)
    assert mounts().get(str(point), ("",))[0] == "fuse.smbnetfs", done.message
    pid = _smbnetfs_pid(point)

    os.kill(pid, signal.SIGKILL)  # the server gone: ENOTCONN
    await asyncio.sleep(0.2)
    now, seen = manager.status("nas", settings)
    assert now == "stale" and "not connected" in seen
    with pytest.raises(NotMounted, match="stale mount"):
        open_backend(str(point / "repo"), NO_CREDENTIALS)

    undone = await manager.unmount("nas", settings)  # lazily: the server cannot be waited for
    assert undone.ok, undone.message
    assert stand_in.calls()[-1]["argv"] == ["umount", "-l", str(point)]


def test_a_stat_that_hangs_counts_as_stale_within_its_time() -> None:
    """A hard NFS mount of a hung server blocks the stat in the kernel: the probe's thread is left
    behind and the caller has its answer in time (the hang stood in for by a sleeping call)."""
    started = time.monotonic()
    with pytest.raises(TimedOut):
        timed(lambda: time.sleep(3), 0.3)
    assert time.monotonic() - started < 1
    assert timed(lambda: 42, 1) == 42
    started = time.monotonic()
    with pytest.raises(TimedOut):
        timed(lambda: time.sleep(1), 0.1, "/hung")
    with pytest.raises(TimedOut, match="earlier call still waits"):  # no second thread meanwhile
        timed(lambda: 42, 5, "/hung")
    assert time.monotonic() - started < 0.5
    with pytest.raises(FileNotFoundError):
        timed(lambda: os.stat("/nonexistent/vbm"), 1)
