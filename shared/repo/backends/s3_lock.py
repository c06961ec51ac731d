"""Object Lock of an S3 repository (`?immutable_days=N`; see shared/repo/backends/s3.py): the
retention dates objects get and extend to, removing delete markers, and checking the bucket."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from minio.error import S3Error
from minio.retention import Retention
from urllib3.exceptions import HTTPError as Urllib3Error

from shared.repo.errors import Misconfigured, ObjectMissing, RepoError

if TYPE_CHECKING:
    from minio import Minio

    from shared.repo.backends.s3_location import S3Location

LOCKED_PREFIXES = ("chunks/", "manifests/")
MAX_GENERATION_DAYS = 10


class ObjectLock:
    """The Object Lock half of S3Backend (a mixin: the backend holds the client and the calls)."""

    if TYPE_CHECKING:
        where: S3Location
        location: str
        immutable_days: int
        retained: int
        _lock_checked: bool
        _client: Minio
        _clock: Callable[[], datetime]

        def _key(self, key: str) -> str: ...
        def _error(self, exc: Exception, doing: str) -> RepoError: ...
        def _call(self, doing: str, fn: Callable[[], Any]) -> Any: ...

    def now(self) -> datetime:
        """The time retention dates are counted from (the backend's clock)."""
        return self._clock()

    def _locks(self, key: str) -> bool:
        return bool(self.immutable_days) and (key == "config" or key.startswith(LOCKED_PREFIXES))

    def lock_until(self, now: datetime | None = None) -> datetime | None:
        """The retention date objects written or relied on now get: `immutable_days` from now,
        rounded up to the next generation boundary; None when the location asks for none."""
        if not self.immutable_days:
            return None
        generation = min(self.immutable_days, MAX_GENERATION_DAYS) * 86400
        end = ((now or self._clock()) + timedelta(days=self.immutable_days)).timestamp()
        return datetime.fromtimestamp(math.ceil(end / generation) * generation, UTC)

    def _retain_version(self, key: str, version_id: str | None, until: datetime) -> None:
        self._call(
            f"extending the retention of {key}",
            lambda: self._client.set_object_retention(
                self.where.bucket,
                self._key(key),
                Retention(self.where.lock_mode, until),
                version_id=version_id,
            ),
        )
        self.retained += 1

    async def retain(self, keys: Sequence[str], until: datetime, concurrency: int = 16) -> int:
        """Extend every object's retention to at least `until` (never shorten it); how many
        were extended. A missing object is an error: the caller relies on all of them."""

        def one(key: str) -> bool:
            try:
                st = self._call(
                    f"checking {key}", lambda: self._client.stat_object(self.where.bucket, self._key(key))
                )
            except ObjectMissing:
                raise RepoError(f"{self.location}: {key} is missing: it cannot be kept immutable") from None
            current = retained_until(st)
            if current is not None and current >= until:
                return False
            self._retain_version(key, st.version_id, until)
            return True

        sem = asyncio.Semaphore(concurrency)

        async def bounded(key: str) -> bool:
            async with sem:
                return await asyncio.to_thread(one, key)

        return sum(await asyncio.gather(*(bounded(k) for k in keys)))

    async def undelete(self) -> Sequence[str]:
        """Remove the delete markers under the location (someone deleted objects without their
        version: in a versioned bucket the data stays behind a marker); the keys brought back."""

        def run() -> Sequence[str]:
            cut = len(self.where.prefix)
            markers = [
                (o.object_name, o.version_id)
                for o in self._client.list_objects(
                    self.where.bucket, prefix=self.where.prefix, recursive=True, include_version=True
                )
                if o.is_delete_marker and o.is_latest == "true"
            ]
            for name, version in markers:
                self._client.remove_object(self.where.bucket, name, version_id=version)
            return [str(name)[cut:] for name, _ in markers]

        back: Sequence[str] = await asyncio.to_thread(self._call, "removing delete markers", run)
        return back

    async def check_immutability(self) -> None:
        """With `immutable_days`, the bucket must have Object Lock: RepoError saying so if not."""
        if not self.immutable_days or self._lock_checked:
            return
        status = await self.object_lock()
        if not status["bucket_lock"]:
            raise Misconfigured(
                f"s3://{self.where.endpoint}/{self.where.bucket}: the location asks for immutable restore"
                f" points (immutable_days={self.immutable_days}), and {status['detail']}: use a bucket"
                " created with Object Lock enabled (most servers cannot enable it later), or remove"
                " immutable_days from the location"
            )
        if status.get("default_retention"):
            raise Misconfigured(
                f"s3://{self.where.endpoint}/{self.where.bucket}: the bucket has a default retention"
                f" ({status['default_retention']}), which locks every object, also the ones vbm must"
                " remove (its GC lock, pruned manifests) for as long: vbm sets each object's retention"
                " itself (immutable_days); remove the bucket's default retention"
                " (`mc retention clear --default`, or PutObjectLockConfiguration without a rule)"
            )
        self._lock_checked = True

    async def object_lock(self) -> dict[str, Any]:
        """What the bucket offers and what this location uses, for `vbm repo info`."""

        def ask() -> dict[str, Any]:
            out: dict[str, Any] = {
                "immutable_days": self.immutable_days,
                "mode": self.where.lock_mode if self.immutable_days else None,
            }
            try:
                config = self._client.get_object_lock_config(self.where.bucket)
            except S3Error as exc:
                if exc.code in ("ObjectLockConfigurationNotFoundError", "InvalidRequest"):
                    return {
                        **out,
                        "bucket_lock": False,
                        "detail": f"bucket {self.where.bucket} has no Object Lock",
                    }
                if exc.code in ("NotImplemented", "MethodNotAllowed"):
                    return {
                        **out,
                        "bucket_lock": False,
                        "detail": "this S3 server does not support Object Lock",
                    }
                raise self._error(exc, "reading the bucket's Object Lock configuration") from None
            except (Urllib3Error, OSError) as exc:
                raise self._error(exc, "reading the bucket's Object Lock configuration") from None
            default = f"{config.mode} {config.duration} {config.duration_unit}" if config.mode else None
            detail = "bucket has Object Lock"
            if default:
                detail += f" with a default retention ({default}): every object is locked, vbm's GC lock too"
            return {**out, "bucket_lock": True, "default_retention": default, "detail": detail}

        return await asyncio.to_thread(ask)

    def _still_locked(self, key: str, name: str) -> datetime | bool:
        """After a refused delete: the object's retention date if it is in the future, True for
        a legal hold (or when it cannot be asked), False when nothing holds it any more."""
        try:
            st = self._call(f"checking {key}", lambda: self._client.stat_object(self.where.bucket, name))
        except ObjectMissing:
            return False
        except RepoError:
            return True
        if st.metadata.get("x-amz-object-lock-legal-hold") == "ON":
            return True
        until = retained_until(st)
        return until if until is not None and until > self._clock() else False


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retained_until(st: Any) -> datetime | None:
    """The retention date a HEAD answer carries (None: no retention)."""
    raw = (st.metadata or {}).get("x-amz-object-lock-retain-until-date")
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
