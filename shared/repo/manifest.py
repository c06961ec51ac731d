"""Restore point manifests: what a restore point holds, written last and never changed.

Stored as the object `manifests/<id>`: one line with the lower-case hex BLAKE3 digest of the rest of
the object, a newline, then the manifest as UTF-8 JSON. A reader *must* refuse a manifest whose
checksum does not match the bytes that follow it.

A disk's chunk list is compact: a string is the id of the chunk for the next window; an integer
n is n all-zero windows, which are not stored. The last window of a disk whose capacity is not a
multiple of the chunk size is shorter.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from blake3 import blake3
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.repo.chunk import zero_id
from shared.repo.errors import ManifestError

HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ChunkEntry = HexId | Annotated[int, Field(gt=0)]
RP_ID = r"^rp-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$"


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileEntry(Model):
    """A file of the VM as captured: small files are stored as chunks; disk images point at a disk."""

    path: str
    size: int = Field(ge=0)
    digest: HexId | None = Field(default=None, description="Whole-file BLAKE3 digest (small files)")
    chunks: tuple[ChunkEntry, ...] = ()
    disk_key: int | None = Field(default=None, description="For a flat disk image: its disk")


class DiskEntry(Model):
    key: int
    label: str = ""
    file: str = Field(description="The flat image's path in the datastore, e.g. web/web-flat.vmdk")
    capacity: int = Field(ge=0)
    chunk_size: int = Field(gt=0)
    chunks: tuple[ChunkEntry, ...]
    tree: HexId = Field(description="BLAKE3 over the ordered window ids (see design.md)")
    change_id: str | None = None
    built_on: str | None = Field(default=None, description="Restore point this one inherited from")
    stored_windows: int = Field(ge=0, description="Windows read and written by this backup")

    @model_validator(mode="after")
    def _windows_cover_capacity(self) -> DiskEntry:
        want = -(-self.capacity // self.chunk_size)
        have = sum(e if isinstance(e, int) else 1 for e in self.chunks)
        if have != want:
            raise ValueError(f"disk {self.key}: {have} windows listed, capacity needs {want}")
        return self

    def windows(self) -> Iterator[tuple[int, int, str | None]]:
        """(offset, length, chunk id or None for zero) of every window, in order."""
        index = 0
        for entry in self.chunks:
            for _ in range(entry if isinstance(entry, int) else 1):
                offset = index * self.chunk_size
                length = min(self.chunk_size, self.capacity - offset)
                yield offset, length, None if isinstance(entry, int) else entry
                index += 1

    def chunk_ids(self) -> set[str]:
        return {e for e in self.chunks if isinstance(e, str)}


class SkippedDiskEntry(Model):
    """A disk of the VM that this restore point does not hold, and why (excluded by the job, an
    independent disk, a raw device mapping). Optional: absent when no disk was skipped."""

    key: int
    label: str = ""
    reason: str


class RestorePoint(Model):
    format: Literal["vbm-restore-point"] = "vbm-restore-point"
    version: Literal[1] = 1
    id: str = Field(pattern=RP_ID)
    job_id: str | None = None
    run_id: str | None = None
    vcenter: str | None = None
    vm_name: str
    vm_moref: str | None = None
    vm_uuid: str | None = None
    snapshot_name: str | None = None
    snapshot_moref: str | None = None
    started: datetime
    finished: datetime
    parent: str | None = None
    disks: tuple[DiskEntry, ...] = ()
    files: tuple[FileEntry, ...] = ()
    immutable_until: datetime | None = Field(
        default=None, description="Object Lock: every object of this point is retained at least until then"
    )
    skipped: tuple[SkippedDiskEntry, ...] = Field(default=(), description="Disks left out, and why")

    def chunk_ids(self) -> set[str]:
        ids: set[str] = set()
        for disk in self.disks:
            ids |= disk.chunk_ids()
        for f in self.files:
            ids |= {e for e in f.chunks if isinstance(e, str)}
        return ids

    def disk(self, key_or_index: int) -> DiskEntry:
        for d in self.disks:
            if d.key == key_or_index:
                return d
        if 0 <= key_or_index < len(self.disks):
            return self.disks[key_or_index]
        raise ManifestError(f"restore point {self.id} has no disk {key_or_index}")


def compact(entries: list[str | None]) -> tuple[ChunkEntry, ...]:
    """Window ids (None for zero) -> the compact manifest form."""
    out: list[ChunkEntry] = []
    for entry in entries:
        if entry is None:
            if out and isinstance(out[-1], int):
                out[-1] += 1
            else:
                out.append(1)
        else:
            out.append(entry)
    return tuple(out)


def expand(entries: tuple[ChunkEntry, ...]) -> list[str | None]:
    out: list[str | None] = []
    for entry in entries:
        out.extend([None] * entry if isinstance(entry, int) else [entry])
    return out


def tree_digest(entries: list[str | None], capacity: int, chunk_size: int) -> str:
    """BLAKE3 over the 32-byte ids of every window in order (zero windows by their zero id)."""
    h = blake3()
    for index, entry in enumerate(entries):
        length = min(chunk_size, capacity - index * chunk_size)
        h.update(bytes.fromhex(entry if entry is not None else zero_id(length)))
    return h.hexdigest()


def dump(model: RestorePoint) -> bytes:
    # `skipped` is written only when a disk was skipped: other manifests keep their shape.
    body = model.model_dump_json(indent=1, exclude=None if model.skipped else {"skipped"}).encode()
    return blake3(body).hexdigest().encode() + b"\n" + body


def load(raw: bytes, rp_id: str) -> RestorePoint:
    head, sep, body = raw.partition(b"\n")
    if not sep or len(head) != 64:
        raise ManifestError(f"manifest of restore point {rp_id} is truncated or not a manifest")
    if blake3(body).hexdigest().encode() != head:
        raise ManifestError(f"manifest of restore point {rp_id} fails its checksum (damaged)")
    try:
        model = RestorePoint.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(
            f"manifest of restore point {rp_id} is invalid: {where}: {first['msg']}"
        ) from None
    if model.id != rp_id:
        raise ManifestError(f"manifest stored as {rp_id} names itself {model.id}")
    return model
