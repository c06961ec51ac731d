"""Repository errors. Each message says what is wrong, where, and what to do."""

from __future__ import annotations

from datetime import datetime


class RepoError(Exception):
    """Base of every repository error."""


class NotARepository(RepoError):
    pass


class Misconfigured(RepoError):
    """The location cannot work as configured (refused credentials, a bucket or container that
    does not exist, a bucket without the Object Lock it asks for): trying again changes nothing;
    a person must change the credentials, the bucket or the location."""


class UnsupportedVersion(RepoError):
    pass


class ObjectMissing(RepoError):
    """A backend object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key} does not exist")
        self.key = key


class ChunkError(RepoError):
    """A chunk is missing or damaged; names the chunk and the restore point that needs it."""

    def __init__(self, chunk: str, problem: str, restore_point: str | None = None) -> None:
        where = f" (needed by restore point {restore_point})" if restore_point else ""
        super().__init__(f"chunk {chunk} {problem}{where}")
        self.chunk = chunk
        self.problem = problem
        self.restore_point = restore_point


class ManifestError(RepoError):
    """A restore point's manifest is missing, unreadable or fails its checksum."""


class StorageFull(RepoError):
    """The backend has no space left; nothing partial was made visible."""


class ObjectLocked(RepoError):
    """An object is immutable (S3 Object Lock) and cannot be removed before `until`."""

    def __init__(self, key: str, until: datetime | None) -> None:
        when = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "by the bucket's retention rules"
        super().__init__(f"object {key} is immutable {when} (Object Lock): it can be removed after that")
        self.key = key
        self.until = until
