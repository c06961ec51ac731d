"""The backup repository: deduplicated, compressed, content-addressed restore points.

It knows nothing of NATS or vSphere. See docs/design.md, "Repository format".
"""

from shared.repo.backend import Backend, ObjectInfo
from shared.repo.backends.local import LocalBackend
from shared.repo.check import CheckReport, check
from shared.repo.errors import (
    ChunkError,
    ManifestError,
    NotARepository,
    ObjectLocked,
    ObjectMissing,
    RepoError,
    StorageFull,
    UnsupportedVersion,
)
from shared.repo.manifest import DiskEntry, FileEntry, RestorePoint
from shared.repo.reader import read_disk, read_file
from shared.repo.repository import Repository, new_restore_point_id
from shared.repo.writer import DiskSource, Writer, WriteStats, restore_point, touched_windows

__all__ = [
    "Backend",
    "CheckReport",
    "ChunkError",
    "DiskEntry",
    "DiskSource",
    "FileEntry",
    "LocalBackend",
    "ManifestError",
    "NotARepository",
    "ObjectInfo",
    "ObjectLocked",
    "ObjectMissing",
    "RepoError",
    "Repository",
    "RestorePoint",
    "StorageFull",
    "UnsupportedVersion",
    "WriteStats",
    "Writer",
    "check",
    "new_restore_point_id",
    "read_disk",
    "read_file",
    "restore_point",
    "touched_windows",
]
