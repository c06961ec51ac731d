"""A repository in a local directory (or an NFS mount).

Writes go to a hidden temporary file in the target folder and are published with `link(2)`,
which fails when the name exists: put-if-absent is atomic, and a crash leaves at most a
`.tmp-*` file that no listing shows. Durability is batched: `flush()` fsyncs the files and folders
touched since the last flush, so chunks cost no fsync each and a manifest is written only after
its chunks are on disk.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from shared.repo.backend import TMP_PREFIX, ObjectInfo, aside_name
from shared.repo.errors import ObjectMissing, RepoError, StorageFull
from shared.repo.mountguard import check_location


class LocalBackend:
    def __init__(self, root: Path | str, *, clock: Callable[[], float] | None = None) -> None:
        self.root = Path(root).resolve()
        self.location = str(self.root)
        self._pending: set[Path] = set()
        self._lock = threading.Lock()
        self._clock = clock  # tests: the time written as objects' modification time

    def _touch(self, path: Path) -> bool:
        """Mark an object as needed now (its mtime): garbage collection never removes an object
        touched after its cut-off, which is how a running backup's reused chunks stay safe.
        False when the object is gone (garbage collection took it a moment ago)."""
        try:
            os.utime(path, None if self._clock is None else (self._clock(), self._clock()))
        except FileNotFoundError:
            return False
        return True

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return self.root / key

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = False) -> bool:
        return await asyncio.to_thread(self._put, key, data, durable)

    def _put(self, key: str, data: bytes, durable: bool) -> bool:
        path = self._path(key)
        if path.exists() and path.stat().st_size > 0 and self._touch(path):
            self._note(path)  # someone else's write: make sure it is durable before we rely on it
            return False
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            if not path.parent.is_dir():
                # a long-lived backend whose share was unmounted since it was opened: never make
                # the folders on the local disk underneath (shared/repo/mountguard.py)
                check_location(self.root)
                path.parent.mkdir(parents=True, exist_ok=True)  # can fail with ENOSPC too
            with open(tmp, "xb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            if self._clock is not None:
                os.utime(tmp, (self._clock(), self._clock()))
            try:
                os.link(tmp, path)
            except FileExistsError:
                if path.stat().st_size > 0 and self._touch(path):
                    return False
                os.replace(tmp, path)  # an empty object can only be a crash remnant: replace it
                tmp = path
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in {self.root} while writing {key}") from None
            raise RepoError(f"cannot write {key} in {self.root}: {exc.strerror}") from None
        finally:
            if tmp != path:
                tmp.unlink(missing_ok=True)
        if durable:
            _fsync_dir(path.parent)
        else:
            self._note(path)
        return True

    def _note(self, path: Path) -> None:
        with self._lock:
            self._pending.add(path)

    async def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
        if pending:
            await asyncio.to_thread(self._fsync_all, pending)

    @staticmethod
    def _fsync_all(paths: set[Path]) -> None:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in {p.parent for p in paths}:
            _fsync_dir(folder)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get, key, offset, length)

    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                if offset:
                    fh.seek(offset)
                return fh.read() if length is None else fh.read(length)
        except (FileNotFoundError, NotADirectoryError):  # NotADirectory: the root is a file
            raise ObjectMissing(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, key)

    def _exists(self, key: str) -> bool:
        """Whether a complete object is there. An empty file is a crash remnant that `_put`
        replaces, so it does not count; an object found is made durable at the next `flush()`,
        as `_put` does, since the caller will rely on it."""
        path = self._path(key)
        try:
            if path.stat().st_size == 0:
                return False
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not self._touch(path):
            return False
        self._note(path)
        return True

    async def stat(self, key: str) -> ObjectInfo:
        try:
            st = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        infos = await asyncio.to_thread(self._scan, prefix)
        for info in infos:
            yield info

    def _scan(self, prefix: str) -> builtins.list[ObjectInfo]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        out: list[ObjectInfo] = []
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                out.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        return out

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def delete_if_unused_since(self, key: str, cutoff: datetime) -> int | None:
        return await asyncio.to_thread(self._delete_if_unused, key, cutoff.timestamp())

    def _delete_if_unused(self, key: str, cutoff: float) -> int | None:
        """Move the object aside first (a writer's touch now finds it gone and stores it again),
        then look at its modification time: touched since the cut-off, it is put back."""
        path = self._path(key)
        aside = path.parent / aside_name(path.name)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        st = aside.stat()
        if st.st_mtime >= cutoff:
            with contextlib.suppress(FileExistsError):  # else a writer stored it again meanwhile
                os.link(aside, path)  # still needed: back where it was
            aside.unlink()
            return None
        aside.unlink()
        return st.st_size

    async def leftovers(self) -> builtins.list[ObjectInfo]:
        def scan() -> builtins.list[ObjectInfo]:
            out: list[ObjectInfo] = []
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    if name.startswith(TMP_PREFIX):
                        full = os.path.join(dirpath, name)
                        with contextlib.suppress(FileNotFoundError):
                            st = os.stat(full)
                            key = os.path.relpath(full, self.root).replace(os.sep, "/")
                            out.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
            return out

        return await asyncio.to_thread(scan)

    async def put_back(self, aside: str, key: str) -> bool:
        def run() -> bool:
            src, dst = self._path(aside), self._path(key)
            try:
                os.link(src, dst)
                back = True
                _fsync_dir(dst.parent)
            except FileExistsError:
                back = False
            except FileNotFoundError:
                return False
            src.unlink(missing_ok=True)
            return back

        return await asyncio.to_thread(run)

    async def usage(self) -> tuple[int | None, int | None]:
        du = await asyncio.to_thread(shutil.disk_usage, self.root)
        return du.total, du.free

    async def close(self) -> None:
        await self.flush()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
