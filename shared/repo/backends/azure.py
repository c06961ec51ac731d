"""A repository in an Azure Blob container, through `azure-storage-blob`.

Location: `azure://<account>/<container>[/<prefix>]`, with `?endpoint=<account URL>` for anything
but Azure's public cloud (Azurite: `http://127.0.0.1:10000/<account>`; sovereign clouds). The
account key is not part of the location: it is the process's `azure.account_key`
(`VBM_AZURE__ACCOUNT_KEY`) and appears in no log line or error. The container must exist.

How the contract (`shared/repo/backend.py`) maps onto Blob storage:
- `put_if_absent`: one Put Blob with `If-None-Match: *` (the SDK's `overwrite=False`); objects
  are at most a chunk (64 MiB) and the single-put limit is set above that, so no uncommitted
  blocks are ever staged and left. An acknowledged write is durable: `flush()` has nothing to do.
- `exists` (and an existing blob on put): Get Blob Properties; a blob last modified more than
  `refresh_after` ago is refreshed with Set Blob Metadata, which moves its Last-Modified *and*
  its ETag.
- `delete_if_unused_since`: properties, then Delete Blob with `If-Match: <ETag>`: a refresh in
  between changes the ETag, the delete is refused (412) and the blob kept: atomic, as the local
  backend's.
- Retries: the SDK's exponential retry (4 more tries, ~3, 5, 9, 17 s apart: `backoff` x (1 + 2^n))
  on connection errors, 5xx and 429 (the SDK alone would not retry a 429: Blob storage throttles
  with 503, a gateway in front of it may answer 429); a body cut off mid-read is read again
  (the SDK's downloader); a read quiet for `timeout` fails; a refused key and a missing
  container fail at once, saying what to check.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import PipelineResponse
from azure.storage.blob import ContainerClient, ExponentialRetry

from shared.repo.backend import ObjectInfo, listed_in_batches
from shared.repo.errors import Misconfigured, ObjectMissing, RepoError

SINGLE_PUT = 128 << 20  # above the largest object (a 64 MiB chunk): never staged blocks


def _timed_out(exc: BaseException) -> bool:
    """Whether a timeout is what the error comes from (the SDK wraps it, sometimes twice)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ServiceRequestTimeoutError | ServiceResponseTimeoutError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class AzureLocation:
    """A parsed `azure://account/container[/prefix][?endpoint=URL]`."""

    def __init__(self, location: str) -> None:
        head, _, query = location.partition("?")
        parts = urlsplit(head)
        path = parts.path.strip("/")
        if parts.scheme != "azure" or not parts.netloc or not path:
            raise ValueError(
                f"{location!r} is not an Azure Blob location: write azure://<account>/<container>[/<prefix>]"
                " (add ?endpoint=<account URL> outside Azure's public cloud, e.g. for Azurite)"
            )
        if "@" in parts.netloc or ":" in parts.netloc:
            raise ValueError("an Azure location carries no key: set VBM_AZURE__ACCOUNT_KEY")
        self.account = parts.netloc
        self.container, _, prefix = path.partition("/")
        self.prefix = f"{prefix}/" if prefix else ""
        endpoint = {k: v[-1] for k, v in parse_qs(query).items()}.get("endpoint")
        self.endpoint = (endpoint or f"https://{self.account}.blob.core.windows.net").rstrip("/")
        self.location = location


class _Backoff(ExponentialRetry):
    """The SDK's exponential retry (initial 1 s, base 2: 1 + 2^n seconds before the nth retry),
    scaled by `backoff`, with a jitter of +- backoff / 2 (the SDK's +- 1 s could make the first
    retry of a throttled request immediate)."""

    def __init__(self, backoff: float, retries: int) -> None:
        super().__init__(initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1)
        self.backoff = backoff

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        count = settings["count"]  # 1 before the first retry
        base = self.backoff * (1 + (0 if count == 0 else 2**count))
        return random.uniform(base - self.backoff / 2, base + self.backoff / 2)


def _throttled_is_busy(response: PipelineResponse) -> None:  # type: ignore[type-arg]
    """The SDK retries a 503 (Blob storage's throttling) but no 4xx: a 429 (from a gateway in
    front of the storage) is marked the way its retry check knows a busy server. Called for
    every answer, inside the retry loop (`raw_response_hook`)."""
    if response.http_response.status_code == 429:
        response.http_response.headers["x-ms-copy-source-error-code"] = "ServerBusy"


class AzureBackend:
    def __init__(
        self,
        location: str,
        account_key: str,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        refresh_after: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.where = AzureLocation(location)
        self.location = location
        self.refresh_after = refresh_after
        self._clock = clock or (lambda: datetime.now(UTC))
        self._timeout = timeout
        self._client = ContainerClient(
            self.where.endpoint,
            self.where.container,
            credential={"account_name": self.where.account, "account_key": account_key},
            max_single_put_size=SINGLE_PUT,
            retry_policy=_Backoff(backoff, retries),
            raw_response_hook=_throttled_is_busy,
            connection_timeout=min(10.0, timeout),
            read_timeout=timeout,
        )

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return self.where.prefix + key

    def _error(self, exc: Exception, doing: str) -> RepoError:
        where = f"azure://{self.where.account}/{self.where.container}"
        code = getattr(exc, "error_code", None)
        if isinstance(exc, ClientAuthenticationError) or code in (
            "AuthenticationFailed",
            "AuthorizationFailure",
        ):
            return Misconfigured(
                f"{where}: {doing}: the account key was refused ({code or 'AuthenticationFailed'}): check"
                " VBM_AZURE__ACCOUNT_KEY and the account name"
            )
        if code == "ContainerNotFound":
            return Misconfigured(
                f"{where}: container {self.where.container} does not exist: create it (vbm does not)"
            )
        status = getattr(exc, "status_code", None)
        if _timed_out(exc):
            return RepoError(
                f"{where}: {doing}: cannot reach the Blob endpoint: it timed out (nothing for"
                f" {self._timeout:g} s, retried): a stalled connection or server"
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError) or (
            isinstance(exc, HttpResponseError) and status is None  # the answer broke off (download)
        ):
            return RepoError(f"{where}: {doing}: cannot reach the Blob endpoint ({type(exc).__name__})")
        return RepoError(f"{where}: {doing}: {code or type(exc).__name__} (HTTP {status})")

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise self._error(exc, doing) from None
            raise ObjectMissing(doing) from None
        except (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
            ClientAuthenticationError,
        ) as exc:
            raise self._error(exc, doing) from None

    # --- the contract -----------------------------------------------------------------------

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = False) -> bool:
        return await asyncio.to_thread(self._put, key, data)

    def _put(self, key: str, data: bytes) -> bool:
        blob = self._client.get_blob_client(self._key(key))
        try:
            blob.upload_blob(data, length=len(data), overwrite=False)
            return True
        except ResourceExistsError:
            pass
        except (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
            ClientAuthenticationError,
        ) as exc:
            raise self._error(exc, f"writing {key}") from None
        if not self._exists(key):  # deleted meanwhile: write it
            return self._put(key, data)
        return False

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get, key, offset, length)

    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        if length == 0:
            return b""
        blob = self._client.get_blob_client(self._key(key))

        def run() -> bytes:
            try:
                return bytes(blob.download_blob(offset=offset, length=length).readall())
            except HttpResponseError as exc:
                if exc.status_code == 416:
                    return b""  # from the end of the blob on: nothing
                raise

        try:
            return self._call(f"reading {key}", run)  # type: ignore[no-any-return]
        except ObjectMissing:
            raise ObjectMissing(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, key)

    def _exists(self, key: str) -> bool:
        blob = self._client.get_blob_client(self._key(key))
        try:
            props = self._call(f"checking {key}", blob.get_blob_properties)
        except ObjectMissing:
            return False
        if props.last_modified < self._clock() - self.refresh_after:
            try:
                blob.set_blob_metadata(
                    {"vbmrefreshed": str(int(time.time()))}, etag=props.etag,
                    match_condition=MatchConditions.IfNotModified,
                )  # fmt: skip
            except ResourceNotFoundError:
                return False  # garbage collection took it a moment ago: the caller stores it again
            except ResourceModifiedError:
                return self._exists(key)  # refreshed by someone else meanwhile: look again
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
                raise self._error(exc, f"refreshing {key}") from None
        return True

    async def stat(self, key: str) -> ObjectInfo:
        blob = self._client.get_blob_client(self._key(key))
        try:
            props = await asyncio.to_thread(self._call, f"checking {key}", blob.get_blob_properties)
        except ObjectMissing:
            raise ObjectMissing(key) from None
        return ObjectInfo(key, int(props.size), props.last_modified)

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        blobs: Iterator[Any] = iter(self._client.list_blobs(name_starts_with=self.where.prefix + prefix))
        cut = len(self.where.prefix)
        return listed_in_batches(
            blobs,
            lambda blob: ObjectInfo(blob.name[cut:], int(blob.size), blob.last_modified),
            lambda batch: self._call(f"listing {prefix}", batch),
        )

    async def delete(self, key: str) -> None:
        blob = self._client.get_blob_client(self._key(key))
        try:
            await asyncio.to_thread(self._call, f"deleting {key}", blob.delete_blob)
        except ObjectMissing:
            return

    async def delete_if_unused_since(self, key: str, cutoff: datetime) -> int | None:
        return await asyncio.to_thread(self._delete_if_unused, key, cutoff)

    def _delete_if_unused(self, key: str, cutoff: datetime) -> int | None:
        blob = self._client.get_blob_client(self._key(key))
        try:
            props = self._call(f"checking {key}", blob.get_blob_properties)
        except ObjectMissing:
            return None
        if props.last_modified >= cutoff:
            return None
        try:
            blob.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None  # refreshed (or gone) since we looked: kept
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return None
            raise self._error(exc, f"deleting {key}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._error(exc, f"deleting {key}") from None
        return int(props.size)

    async def flush(self) -> None:
        return None  # an acknowledged write is durable

    async def usage(self) -> tuple[int | None, int | None]:
        return None, None  # a container has no capacity to report

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
