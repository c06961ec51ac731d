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
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3Error

from shared.repo.backend import ObjectInfo, listed_in_batches
from shared.repo.backends.s3_location import S3Location
from shared.repo.backends.s3_lock import ObjectLock, iso, retained_until
from shared.repo.errors import Misconfigured, ObjectLocked, ObjectMissing, RepoError

MISSING = ("NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchVersion")  # gone, or its version is
BODY_TRIES = 3  # reads of an object whose body was cut off or stalled after its headers
DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken")


class S3Backend(ObjectLock):
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
                return Misconfigured(
                    f"{where}: {doing}: the credentials were refused ({exc.code}): check"
                    " VBM_S3__ACCESS_KEY / VBM_S3__SECRET_KEY and the key's permissions on the bucket"
                )
            if exc.code == "NoSuchBucket":
                return Misconfigured(
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
            headers["x-amz-object-lock-retain-until-date"] = iso(until)
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
            current = retained_until(st)
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
            until = retained_until(st)
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
