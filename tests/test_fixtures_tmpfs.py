"""The tmpfs fixtures: real, size-limited filesystems for disk-full tests."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.plugins.tmpfs import SmallFsFactory, mount_tmpfs, unmount

MiB = 1024 * 1024


def _fill(path: Path, total: int) -> int:
    """Write up to ``total`` bytes (fsync at the end); return how many were written."""
    written = 0
    chunk = b"\xab" * (256 * 1024)
    with open(path, "wb") as fh:
        while written < total:
            written += fh.write(chunk)
            fh.flush()
        os.fsync(fh.fileno())
    return written


def test_small_fs_is_a_4m_tmpfs(small_fs: Path) -> None:
    assert os.path.ismount(small_fs)
    st = os.statvfs(small_fs)
    assert st.f_blocks * st.f_frsize == 4 * MiB
    assert oct(small_fs.stat().st_mode & 0o777) == oct(0o755)
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        [line] = [ln for ln in fh if ln.split()[1] == str(small_fs)]
    assert line.split()[2] == "tmpfs"


def test_writing_past_the_size_raises_enospc(small_fs: Path) -> None:
    with pytest.raises(OSError) as info:
        _fill(small_fs / "big.bin", 5 * MiB)
    assert info.value.errno == errno.ENOSPC
    # Freeing space makes writes work again.
    (small_fs / "big.bin").unlink()
    assert _fill(small_fs / "ok.bin", MiB) == MiB


def test_factory_mounts_any_size_and_unmounts(small_fs_factory: SmallFsFactory) -> None:
    one = small_fs_factory("1m")
    eight = small_fs_factory("8m")
    assert os.statvfs(one).f_blocks * os.statvfs(one).f_frsize == MiB
    assert os.statvfs(eight).f_blocks * os.statvfs(eight).f_frsize == 8 * MiB
    assert _fill(eight / "fits.bin", 4 * MiB) == 4 * MiB
    with pytest.raises(OSError) as info:
        _fill(one / "too-big.bin", 2 * MiB)
    assert info.value.errno == errno.ENOSPC


def test_busy_mount_is_lazily_unmounted(tmp_path: Path) -> None:
    target = mount_tmpfs(tmp_path / "busy", "1m")
    with open(target / "held-open", "wb") as held:
        held.write(b"x")
        unmount(target)  # busy? falls back to umount -l
        assert not os.path.ismount(target)


def test_bad_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tmpfs size"):
        mount_tmpfs(tmp_path / "bad", "4 megabytes")


def test_without_root_it_fails_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match=r"need root \(CAP_SYS_ADMIN\)"):
        mount_tmpfs(tmp_path / "nope", "1m")
    assert not os.path.ismount(tmp_path / "nope")
