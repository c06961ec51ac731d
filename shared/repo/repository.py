"""A repository: a config object, write-once chunks, and restore point manifests on a backend.

    config                      JSON: format, version, id, chunk size, hash, compression
    chunks/<2 hex>/<64 hex>     chunk objects (see chunk.py), named by the BLAKE3 digest of their content
    manifests/<restore point>   restore point manifests (see manifest.py), written last

Order of writes: chunks, then `flush()` (chunks durable), then the manifest, durably. A manifest
therefore never names a chunk that a crash could have lost, and a restore point is visible only
once it is complete.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

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
            return cls(backend, RepoConfig.model_validate(data))
        except ValidationError as exc:
            raise NotARepository(f"{backend.location}: bad config object: {exc.errors()[0]['msg']}") from None

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
    async def commit(self, rp: RestorePoint) -> None:
        """Make `rp` visible: its chunks durable first, then its manifest, durably."""
        await self.backend.flush()
        body = manifest.dump(rp)
        if not await self.backend.put_if_absent(manifest_key(rp.id), body, durable=True):
            existing = await self.backend.get(manifest_key(rp.id))
            if existing != body:
                raise ManifestError(f"restore point {rp.id} already exists with other content")

    async def restore_point_ids(self) -> list[str]:
        ids = [info.key.split("/", 1)[1] async for info in self.backend.list("manifests/")]
        return sorted(ids)

    async def load(self, rp_id: str) -> RestorePoint:
        try:
            raw = await self.backend.get(manifest_key(rp_id))
        except ObjectMissing:
            raise ManifestError(f"restore point {rp_id} does not exist") from None
        return manifest.load(raw, rp_id)

    async def forget(self, rp_id: str) -> None:
        """Remove a restore point's manifest (its chunks stay until garbage collection)."""
        await self.backend.delete(manifest_key(rp_id))
