"""A repository in an S3 bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, ...), through `minio`.

Location: `s3://<host[:port]>/<bucket>[/<prefix>]`, with `?tls=false` for plain HTTP and
`?region=<name>` where the server needs one. Credentials are not part of the location: they come
from the settings (`s3.access_key`, `s3.secret_key`, i.e. `VBM_S3__ACCESS_KEY`/`..._SECRET_KEY`)
and appear in no log line or error. The bucket must exist (vbm does not create buckets: their
policy, versioning and Object Lock are the admin's choice).

How the contract (`shared/repo/backend.py`) maps onto S3:
- `put_if_absent`: one PUT with `If-None-Match: *` (S3 answers 412 when the key exists; AWS since
  2024, MinIO, SeaweedFS 3.97+). Objects are at most a chunk (64 MiB), so a single PUT, never a
  multipart upload that could be left behind. S3 writes are durable when answered: `flush()`
  has nothing to do, and an object is visible only when complete.
- `exists` (and a 412 on put): HEAD; an object last modified more than `refresh_after` ago (1 h)
  is *refreshed* (copied onto itself with new metadata), which is what tells garbage collection
  that a running backup relies on it. GC's margin must exceed `refresh_after`.
- `delete_if_unused_since`: HEAD, then DELETE with `If-Match: <ETag>`. S3 has no conditional
  delete on modification time, and a refresh keeps the ETag, so unlike the local backend this is
  not atomic against a refresh landing between the two requests (milliseconds): a backup that
  deduplicated against that very chunk then misses it, and the verification that follows every
  backup reports the restore point damaged (it never looks complete while it is not); the next
  backup stores the chunk again.
- Immutability (`?immutable_days=N[&lock_mode=governance]`, see "Object Lock" below).
- Retries: urllib3 retries connection errors and 5xx/429 answers (5 tries, `backoff` x 1, 2, 4,
  8 s with jitter; a Retry-After is honoured), a GET whose body is cut or stalls after its
  headers is read again (3 tries); a transfer quiet for longer than `timeout` is an error;
  refused credentials and a missing bucket are errors at once, saying what to check.

Object Lock. With `immutable_days=N` in the location, the bucket must have Object Lock enabled
(checked when the repository is opened; a bucket without it is an error that says so). Chunks,
manifests and the config object are then written with a retention date (COMPLIANCE mode unless
`lock_mode=governance`) that nobody, vbm included, can shorten or delete before:
- the date is `now + N days` rounded up to a *generation* boundary (min(N, 10) days, counted from
  the epoch), so an object relied on again is extended at most once per generation;
- `exists` (a writer relying on a chunk) extends the found version to the current generation
  instead of refreshing it by a copy (a copy would make a new version in the versioned bucket);
- a commit extends every chunk of the restore point when its parent's lock ends sooner than
  N days from now (`Repository.commit`): in steady state once per generation per chain;
- deletes remove the *version* (a plain DELETE would only add a delete marker); a locked one is
  refused by the server: `delete` raises ObjectLocked, garbage collection leaves it for later.
  Since a writer extends what it relies on before the server would let GC delete it, the race
  described for `delete_if_unused_since` above cannot happen in a locked repository.
- `locks/` objects (the GC lock) are written without retention.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error
from minio.retention import Retention
from urllib3.exceptions import HTTPError as Urllib3Error

from shared.repo.backend import ObjectInfo, listed_in_batches
from shared.repo.errors import Misconfigured, ObjectLocked, ObjectMissing, RepoError

MISSING = ("NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchVersion")  # gone, or its version is
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
LOCKED_PREFIXES = ("chunks/", "manifests/")
MAX_GENERATION_DAYS = 10
BODY_TRIES = 3  # reads of an object whose body was cut off or stalled after its headers
DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken")


BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class S3Location:
    """A parsed `s3://host[:port]/bucket[/prefix][?tls=false&region=r]`."""

    def __init__(self, location: str) -> None:
        parts = urlsplit(location)
        path = parts.path.strip("/")
        if parts.scheme != "s3" or not parts.netloc or not path:
            raise ValueError(
                f"{location!r} is not an S3 location: write s3://<host[:port]>/<bucket>[/<prefix>]"
                " (add ?tls=false for plain HTTP)"
            )
        if "@" in parts.netloc:
            raise ValueError(
                "an S3 location carries no credentials: set VBM_S3__ACCESS_KEY and VBM_S3__SECRET_KEY"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.endpoint = parts.netloc
        self.bucket, _, prefix = path.partition("/")
        if not BUCKET.fullmatch(self.bucket) or ".." in self.bucket:
            raise ValueError(
                f"{location!r}: {self.bucket!r} is not a valid S3 bucket name (3 to 63 lower-case"
                " letters, digits, dots and hyphens, beginning and ending with a letter or digit)"
            )
        self.prefix = f"{prefix}/" if prefix else ""
        self.secure = query.get("tls", "true").lower() not in ("false", "0", "no")
        self.region = query.get("region")
        self.location = location
        days = query.get("immutable_days", "0")
        if not days.isdigit() or int(days) > 36500:
            raise ValueError(
                f"{location!r}: immutable_days must be a whole number of days (0: off), not {days!r}"
            )
        self.immutable_days = int(days)
        self.lock_mode = query.get("lock_mode", "compliance").upper()
        if self.lock_mode not in LOCK_MODES:
            raise ValueError(
                f"{location!r}: lock_mode must be compliance or governance, not {self.lock_mode!r}"
            )


class S3Backend:
    def __init__(
        self,
        location: str,
        access_key: str,
        secret_key: str,
        *,
        timeout: float = 60.0,
        refresh_after: timedelta = timedelta(hours=1),
        connections: int = 16,
        backoff: float = 0.2,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.where = S3Location(location)
        self._backoff = backoff
        self.location = location
        self.refresh_after = refresh_after
        self.immutable_days = self.where.immutable_days
        self.retained = 0  # retention extensions made (Object Lock)
        self._lock_checked = False
        self._clock = clock or (lambda: datetime.now(UTC))
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(10.0, timeout), read=timeout),
            maxsize=connections,
            retries=_Retry(
                total=5,
                read=2,
                backoff_factor=backoff,
                backoff_jitter=backoff / 2,
                status_forcelist=[429, 500, 502, 503, 504],
                allowed_methods=None,
            ),
        )
        self._client = Minio(
            self.where.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=self.where.secure,
            region=self.where.region,
            http_client=self._http,
        )

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return self.where.prefix + key

    def _error(self, exc: Exception, doing: str) -> RepoError:
        """A clear error for a failed call (never with the credentials in it)."""
        where = f"s3://{self.where.endpoint}/{self.where.bucket}"
        if isinstance(exc, S3Error):
            if exc.code in DENIED:
                return RepoError(
                    f"{where}: {doing}: the credentials were refused ({exc.code}): check"
                    " VBM_S3__ACCESS_KEY / VBM_S3__SECRET_KEY and the key's permissions on the bucket"
                )
            if exc.code == "NoSuchBucket":
                return RepoError(
                    f"{where}: bucket {self.where.bucket} does not exist: create it (vbm does not)"
                )
            return RepoError(f"{where}: {doing}: {exc.code} (HTTP {exc.response.status}): {exc.message}")
        return RepoError(f"{where}: {doing}: cannot reach the S3 endpoint ({type(exc).__name__}: {exc})")

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except S3Error as exc:
            if exc.code in MISSING:
                raise ObjectMissing(doing) from None
            raise self._error(exc, doing) from None
        except (Urllib3Error, OSError) as exc:
            raise self._error(exc, doing) from None

    # --- the contract -----------------------------------------------------------------------

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = False) -> bool:
        return await asyncio.to_thread(self._put, key, data)

    def _put(self, key: str, data: bytes) -> bool:
        name = self._key(key)
        headers: dict[str, str | list[str] | tuple[str]] = {
            "If-None-Match": "*",
            "Content-Length": str(len(data)),
        }
        until = self.lock_until() if self._locks(key) else None
        if until is not None:
            headers["x-amz-object-lock-mode"] = self.where.lock_mode
            headers["x-amz-object-lock-retain-until-date"] = _iso(until)
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        try:
            self._client._put_object(self.where.bucket, name, data, headers=headers)
            return True
        except S3Error as exc:
            if exc.code not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise self._error(exc, f"writing {key}") from None
        except (Urllib3Error, OSError) as exc:
            raise self._error(exc, f"writing {key}") from None
        if not self._exists(key):  # 409: deleted while we wrote; 412: there: it is relied on now
            return self._put(key, data)
        return False

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get, key, offset, length)

    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        if length == 0:
            return b""

        def run() -> bytes:
            try:
                resp = self._client.get_object(
                    self.where.bucket, self._key(key), offset=offset, length=length or 0
                )
            except S3Error as exc:
                if exc.code == "InvalidRange":
                    return b""  # from the end of the object on: nothing
                raise
            try:
                return bytes(resp.read())
            except (Urllib3Error, OSError) as exc:  # headers came, the body did not: safe to read again
                raise _BodyCut(str(exc)) from None
            finally:
                resp.close()
                resp.release_conn()

        for attempt in range(BODY_TRIES):
            try:
                return self._call(f"reading {key}", run)  # type: ignore[no-any-return]
            except ObjectMissing:
                raise ObjectMissing(key) from None
            except _BodyCut as cut:
                if attempt == BODY_TRIES - 1:
                    raise RepoError(
                        f"s3://{self.where.endpoint}/{self.where.bucket}: reading {key}: the transfer"
                        f" stalled or was cut off {BODY_TRIES} times (last: {cut}): check the network"
                        " to the endpoint and the server's health"
                    ) from None
                time.sleep(self._backoff * 2**attempt * random.uniform(1, 1.5))
        raise AssertionError("unreachable")

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, key)

    def _exists(self, key: str) -> bool:
        try:
            st = self._call(
                f"checking {key}", lambda: self._client.stat_object(self.where.bucket, self._key(key))
            )
        except ObjectMissing:
            return False
        if self._locks(key):
            want = self.lock_until()
            assert want is not None
            current = _retained_until(st)
            if current is None or current < want:
                try:
                    self._retain_version(key, st.version_id, want)
                except ObjectMissing:
                    return False  # garbage collection took it a moment ago: the caller stores it again
            return True
        if st.last_modified is not None and st.last_modified < self._clock() - self.refresh_after:
            try:
                self._refresh(key)
            except ObjectMissing:
                return False  # garbage collection took it a moment ago: the caller stores it again
        return True

    def _refresh(self, key: str) -> None:
        name = self._key(key)
        self._call(
            f"refreshing {key}",
            lambda: self._client.copy_object(
                self.where.bucket, name, CopySource(self.where.bucket, name),
                metadata={"vbm-refreshed": str(int(time.time()))}, metadata_directive=REPLACE,
            ),
        )  # fmt: skip

    async def stat(self, key: str) -> ObjectInfo:
        try:
            st = await asyncio.to_thread(
                self._call,
                f"checking {key}",
                lambda: self._client.stat_object(self.where.bucket, self._key(key)),
            )
        except ObjectMissing:
            raise ObjectMissing(key) from None
        return ObjectInfo(key, int(st.size or 0), st.last_modified or datetime.fromtimestamp(0, UTC))

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object under `prefix`, listed page by page (the server's 1000 keys each)."""
        objects: Iterator[Any] = self._client.list_objects(
            self.where.bucket, prefix=self.where.prefix + prefix, recursive=True
        )
        cut = len(self.where.prefix)
        return listed_in_batches(
            objects,
            lambda o: (
                None if o.is_dir else ObjectInfo(o.object_name[cut:], int(o.size or 0), o.last_modified)
            ),
            lambda batch: self._call(f"listing {prefix}", batch),
        )

    async def delete(self, key: str) -> None:
        if self.immutable_days:
            await asyncio.to_thread(self._delete_version, key)
            return
        await asyncio.to_thread(
            self._call,
            f"deleting {key}",
            lambda: self._client.remove_object(self.where.bucket, self._key(key)),
        )

    def _delete_version(self, key: str) -> None:
        """In a locked (so versioned) bucket: remove the object's versions, not hide them."""
        name = self._key(key)
        while True:
            try:
                st = self._call(f"checking {key}", lambda: self._client.stat_object(self.where.bucket, name))
            except ObjectMissing:
                return
            version: str | None = st.version_id
            try:
                self._call(
                    f"deleting {key}",
                    partial(self._client.remove_object, self.where.bucket, name, version_id=version),
                )
            except ObjectMissing:
                return
            except RepoError:
                locked = self._still_locked(key, name)  # asked again: a writer may have extended it
                if locked is not False:
                    raise ObjectLocked(key, locked if isinstance(locked, datetime) else None) from None
                raise
            if not st.version_id:
                return

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
        until = _retained_until(st)
        return until if until is not None and until > self._clock() else False

    async def delete_if_unused_since(self, key: str, cutoff: datetime) -> int | None:
        return await asyncio.to_thread(self._delete_if_unused, key, cutoff)

    def _delete_if_unused(self, key: str, cutoff: datetime) -> int | None:
        name = self._key(key)
        try:
            st = self._call(f"checking {key}", lambda: self._client.stat_object(self.where.bucket, name))
        except ObjectMissing:
            return None
        if st.last_modified is None or st.last_modified >= cutoff:
            return None
        query: dict[str, str | list[str] | tuple[str]] = {}
        if self.immutable_days:
            until = _retained_until(st)
            if until is not None and until > self._clock():
                return None  # immutable still (and so relied on: a writer extends what it reuses)
            if st.version_id:
                query["versionId"] = st.version_id  # remove it, not hide it behind a delete marker
        try:
            self._client._execute(
                "DELETE", self.where.bucket, name, headers={"If-Match": f'"{st.etag}"'}, query_params=query
            )
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", *MISSING):
                return None  # stored again with other content since, or gone
            if self.immutable_days and exc.code == "AccessDenied":
                if self._still_locked(key, name) is not False:
                    return None  # a writer extended its retention since the HEAD: it is relied on
                raise RepoError(
                    f"{self.location}: deleting {key}: access denied although its retention has passed:"
                    " the key needs s3:DeleteObjectVersion (and s3:BypassGovernanceRetention for"
                    " governance mode) to remove old versions"
                ) from None
            raise self._error(exc, f"deleting {key}") from None
        except (Urllib3Error, OSError) as exc:
            raise self._error(exc, f"deleting {key}") from None
        return int(st.size or 0)

    async def flush(self) -> None:
        return None  # an answered PUT is durable

    # --- Object Lock ------------------------------------------------------------------------

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
            current = _retained_until(st)
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

    async def usage(self) -> tuple[int | None, int | None]:
        return None, None  # a bucket has no capacity to report

    async def close(self) -> None:
        self._http.clear()


class _BodyCut(Exception):
    """A GET's body stopped (reset, stall past the timeout) after its headers: read it again."""


class _Retry(urllib3.Retry):
    """urllib3's retry, but the first retry waits too (urllib3 retries at once the first time):
    backoff_factor x 2^(n-1) seconds, plus jitter, before the nth retry."""

    def get_backoff_time(self) -> float:
        errors = len(self.history)
        if errors == 0:
            return 0.0
        value = self.backoff_factor * 2 ** (errors - 1) + random.random() * self.backoff_jitter
        return float(min(self.backoff_max, value))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retained_until(st: Any) -> datetime | None:
    """The retention date a HEAD answer carries (None: no retention)."""
    raw = (st.metadata or {}).get("x-amz-object-lock-retain-until-date")
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
