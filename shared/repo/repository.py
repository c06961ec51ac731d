"""A repository: a config object, write-once chunks, and restore point manifests on a backend.

    config                      JSON: format, version, id, chunk size, hash, compression
    chunks/<2 hex>/<64 hex>     chunk objects (see chunk.py), named by the BLAKE3 digest of their content
    manifests/<restore point>   restore point manifests (see manifest.py), written last
    manifests/<rp>.sha256.json  the SHA-256 of each disk image, once known (see digests.py)

Order of writes: chunks, then `flush()` (chunks durable), then the manifest, durably. A manifest
therefore never names a chunk that a crash could have lost, and a restore point is visible only
once it is complete.

On a backend that keeps objects immutable (S3 Object Lock, `immutable_days` in the location), a
commit also makes sure every object the restore point needs is retained for `immutable_days`
from now, and records the date in the manifest (`immutable_until`); see `_keep_immutable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.observe import tracing
from shared.repo import chunk as chunks
from shared.repo import manifest
from shared.repo.backend import Backend
from shared.repo.errors import (
    ChunkError,
    ManifestError,
    NotARepository,
    ObjectMissing,
    UnsupportedVersion,
)
from shared.repo.manifest import RestorePoint

CONFIG_KEY = "config"
FORMAT = "vbm-repository"
VERSION = 1
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024


class RepoConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["vbm-repository"] = "vbm-repository"
    version: int = VERSION
    id: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    hash: Literal["blake3"] = "blake3"
    compression: Literal["zstd"] = "zstd"
    created: datetime


def chunk_key(chunk_id: str) -> str:
    return f"chunks/{chunk_id[:2]}/{chunk_id}"


def manifest_key(rp_id: str) -> str:
    return f"manifests/{rp_id}"


def new_restore_point_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"rp-{stamp}-{secrets.token_hex(4)}"


class Repository:
    def __init__(self, backend: Backend, config: RepoConfig) -> None:
        self.backend = backend
        self.config = config

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @classmethod
    async def init(cls, backend: Backend, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Repository:
        if chunk_size <= 0 or chunk_size > chunks.MAX_PLAIN or chunk_size % 4096:
            raise ValueError(f"chunk size {chunk_size} must be a multiple of 4096 up to 64 MiB")
        await _check_immutability(backend)
        config = RepoConfig(id=uuid.uuid4().hex, chunk_size=chunk_size, created=datetime.now(UTC))
        body = config.model_dump_json(indent=1).encode()
        if not await backend.put_if_absent(CONFIG_KEY, body, durable=True):
            raise NotARepository(f"{backend.location} is already a vbm repository")
        return cls(backend, config)

    @classmethod
    async def open(cls, backend: Backend) -> Repository:
        try:
            raw = await backend.get(CONFIG_KEY)
        except ObjectMissing:
            raise NotARepository(
                f"{backend.location} is not a vbm repository (no config object):"
                " check the path, or create one with `vbm repo init`"
            ) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise NotARepository(f"{backend.location}: the config object is not JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise NotARepository(f"{backend.location}: the config object is not a vbm repository's")
        if data.get("version") != VERSION:
            raise UnsupportedVersion(
                f"{backend.location} is a vbm repository of format version {data.get('version')};"
                f" this vbm reads version {VERSION} only: use a vbm that knows that version"
            )
        try:
            config = RepoConfig.model_validate(data)
        except ValidationError as exc:
            raise NotARepository(f"{backend.location}: bad config object: {exc.errors()[0]['msg']}") from None
        await _check_immutability(backend)
        return cls(backend, config)

    # chunks
    async def has_chunk(self, chunk_id: str) -> bool:
        return await self.backend.exists(chunk_key(chunk_id))

    async def put_chunk(self, chunk_id: str, stored: bytes) -> bool:
        return await self.backend.put_if_absent(chunk_key(chunk_id), stored)

    async def get_chunk(self, chunk_id: str, restore_point: str | None = None) -> bytes:
        """The chunk's plain bytes, verified against its name."""
        try:
            stored = await self.backend.get(chunk_key(chunk_id))
        except ObjectMissing:
            raise ChunkError(chunk_id, "is missing", restore_point) from None
        try:
            return await asyncio.to_thread(chunks.decode, stored, chunk_id)
        except ChunkError as exc:
            raise ChunkError(chunk_id, exc.problem, restore_point) from None

    # restore points
    async def commit(self, rp: RestorePoint, *, resumed: bool = False) -> RestorePoint:
        """Make `rp` visible: its chunks durable first, then its manifest, durably. Returns it as
        committed (with `immutable_until` on an immutable backend). `resumed`: some chunks were
        stored by an earlier attempt (before `rp.started`), so their locks may be shorter."""
        with tracing.span("repository commit", restore_point=rp.id, vm=rp.vm_name):
            return await self._commit(rp, resumed)

    async def _commit(self, rp: RestorePoint, resumed: bool) -> RestorePoint:
        await self.backend.flush()
        if getattr(self.backend, "immutable_days", 0):
            rp = await self._keep_immutable(rp, resumed)
        body = manifest.dump(rp)
        if not await self.backend.put_if_absent(manifest_key(rp.id), body, durable=True):
            existing = await self.backend.get(manifest_key(rp.id))
            if existing != body:
                raise ManifestError(f"restore point {rp.id} already exists with other content")
        return rp

    async def _keep_immutable(self, rp: RestorePoint, resumed: bool = False) -> RestorePoint:
        """Every chunk a writer stored or relied on got at least `lock_until(started)` (see
        shared/repo/backends/s3.py); inherited windows have their parent's `immutable_until`. When the
        lesser of those is N days from now or later, nothing more is needed; otherwise (a new
        generation, a full, a resumed write, a parent from before immutability) every chunk of
        the point and the config are extended to `lock_until(now)`."""
        backend: Any = self.backend
        now: datetime = backend.now()
        need = now + timedelta(days=backend.immutable_days)
        held: datetime | None = backend.lock_until(rp.started)
        if rp.parent and not resumed:
            try:
                parent = await self.load(rp.parent)
            except ManifestError:
                parent = None
            inherited = parent.immutable_until if parent is not None else None
            held = min(held, inherited) if held and inherited else None
        else:
            held = None  # a full (windows may have been found stored by other chains), or resumed
        if held is not None and held >= need:
            return rp.model_copy(update={"immutable_until": held})
        until: datetime = backend.lock_until(now)
        keys = [chunk_key(c) for c in sorted(rp.chunk_ids())]
        await backend.retain([*keys, CONFIG_KEY], until)
        return rp.model_copy(update={"immutable_until": until})

    async def restore_point_ids(self) -> list[str]:
        ids = [info.key.split("/", 1)[1] async for info in self.backend.list("manifests/")]
        return sorted(i for i in ids if "." not in i)  # not the SHA-256 objects (digests.py)

    async def load(self, rp_id: str) -> RestorePoint:
        try:
            raw = await self.backend.get(manifest_key(rp_id))
        except ObjectMissing:
            raise ManifestError(f"restore point {rp_id} does not exist") from None
        return manifest.load(raw, rp_id)

    async def forget(self, rp_id: str) -> None:
        """Remove a restore point's manifest and its SHA-256 object (digests.py); its chunks stay
        until garbage collection. The SHA-256 object goes first: written after the manifest, it may
        be locked (Object Lock) a little longer, and a point kept for that must keep its manifest."""
        with contextlib.suppress(ObjectMissing):
            await self.backend.delete(manifest_key(rp_id) + ".sha256.json")
        await self.backend.delete(manifest_key(rp_id))


async def _check_immutability(backend: Backend) -> None:
    check = getattr(backend, "check_immutability", None)
    if check is not None:
        await check()
