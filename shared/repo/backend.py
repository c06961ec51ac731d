"""The storage backend contract every repository location implements.

Keys are `/`-separated relative names (`config`, `chunks/ab/ab12...`, `manifests/rp-...`). Objects
are write-once: `put_if_absent` never replaces an existing object, and returns whether it wrote.
A backend *must* make an object visible under its key only when it is complete (no reader ever
sees a partial object under a real key). `flush()` makes every object this backend instance wrote
or found existing durable, and *must* be called before writing an object that refers to them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@runtime_checkable
class Backend(Protocol):
    """Where a repository's objects live. All methods are safe to call concurrently."""

    location: str

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = False) -> bool:
        """Store `data` under `key` unless the key exists; True when it wrote. With `durable`,
        the object is on stable storage when this returns; else at the next `flush()`. An object
        that exists already has its modification time refreshed (see `exists`)."""
        ...

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes (or `length` bytes from `offset`); ObjectMissing if absent."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a complete object is there; one that is has its modification time refreshed,
        because the caller is about to rely on it (garbage collection spares objects modified
        after its cut-off: `shared/repo/gc.py`)."""
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Size and modification time; ObjectMissing if absent."""
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every complete object whose key starts with `prefix`, in no particular order."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    async def delete_if_unused_since(self, key: str, cutoff: datetime) -> int | None:
        """Delete the object unless it was modified (or refreshed by `exists`/`put_if_absent`)
        at or after `cutoff`, atomically with respect to such refreshes; its size if deleted."""
        ...

    async def flush(self) -> None:
        """Make every object written or found so far durable."""
        ...

    async def usage(self) -> tuple[int | None, int | None]:
        """(total, free) bytes of the storage, where the backend knows them."""
        ...

    async def close(self) -> None: ...


TMP_PREFIX = ".tmp-"
ASIDE_PREFIX = TMP_PREFIX + "gc-"


def aside_name(name: str) -> str:
    """The hidden name garbage collection moves object `name` to while it decides (the original
    name stays readable in it, so that a GC that died in between can be undone)."""
    return f"{ASIDE_PREFIX}{name}-{uuid.uuid4().hex[:8]}"


def aside_original(name: str) -> str | None:
    """The object name an aside name was made from; None for any other name."""
    if not name.startswith(ASIDE_PREFIX) or "-" not in name[len(ASIDE_PREFIX) :]:
        return None
    return name[len(ASIDE_PREFIX) :].rsplit("-", 1)[0] or None


@runtime_checkable
class HasLeftovers(Protocol):
    """A backend whose writes and GC deletes go through hidden `.tmp-*` names (local, SFTP,
    rclone): a crash can leave them; garbage collection cleans them (`gc.clean_leftovers`)."""

    async def leftovers(self) -> list[ObjectInfo]:
        """Every hidden `.tmp-*` object, with its key and modification time."""
        ...

    async def put_back(self, aside: str, key: str) -> bool:
        """Publish object `aside` under `key` unless `key` exists (True when it did), then
        remove `aside`."""
        ...


LIST_BATCH = 1000
T = TypeVar("T")


async def listed_in_batches(
    items: Iterator[T],
    convert: Callable[[T], ObjectInfo | None],
    guard: Callable[[Callable[[], list[ObjectInfo]]], list[ObjectInfo]],
) -> AsyncIterator[ObjectInfo]:
    """Walk a client library's blocking, paging listing in a worker thread, LIST_BATCH items at a
    time; `convert` makes an item an ObjectInfo (None: skip it); `guard` runs each batch and
    turns the library's errors into the backend's."""

    def batch() -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        for item in items:
            info = convert(item)
            if info is not None:
                out.append(info)
            if len(out) >= LIST_BATCH:
                break
        return out

    while True:
        infos = await asyncio.to_thread(guard, batch)
        for info in infos:
            yield info
        if len(infos) < LIST_BATCH:
            return
