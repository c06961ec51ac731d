"""Reading disks over the datastore HTTP API (`/folder/<path>?dcPath=..&dsName=..`).

This is how vbm reads a snapshot's frozen flat disk: ranged GETs with the vCenter session's
`vmware_soap_session` cookie. A read that fails in a way that may pass (connection reset, cut
short, 5xx, a stalled transfer past `stall_timeout`) is retried with backoff a bounded number of
times; the bytes returned are always exactly the range asked for, or an error is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

CookieSource = Callable[[], Awaitable[str]]


class DownloadError(Exception):
    """A disk read failed for good; the message names the file, the range and the cause."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2.0 ** (attempt - 1)))


class DatastoreHTTP:
    """One HTTP client per vCenter; open disks with `disk()`; close when done."""

    def __init__(
        self,
        base_url: str,
        cookie: CookieSource,
        *,
        verify_tls: bool = True,
        connections: int = 4,
        stall_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._cookie = cookie
        self.retry = retry or RetryPolicy()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=verify_tls),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=stall_timeout),
        )
        self._cookie_value: str | None = None

    async def close(self) -> None:
        await self._session.close()

    def url(self, datacenter: str, datastore: str, path: str) -> str:
        return (
            f"{self.base_url}/folder/{quote(path)}"
            f"?dcPath={quote(datacenter, safe='')}&dsName={quote(datastore, safe='')}"
        )

    def disk(self, datacenter: str, datastore: str, path: str, capacity: int) -> DatastoreDisk:
        return DatastoreDisk(self, self.url(datacenter, datastore, path), path, capacity)

    async def get_file(
        self, datacenter: str, datastore: str, path: str, limit: int = 64 << 20
    ) -> bytes | None:
        """A whole small file (vmx, nvram, descriptor); None if it does not exist."""
        try:
            data = await self._get(self.url(datacenter, datastore, path), path, None, limit)
        except FileNotFoundError:
            return None
        return data

    async def get_range(self, url: str, name: str, offset: int, length: int) -> bytes:
        try:
            return await self._get(url, name, (offset, length), length)
        except FileNotFoundError:
            raise DownloadError(f"{name} does not exist on the datastore", retryable=False) from None

    async def _get(self, url: str, name: str, span: tuple[int, int] | None, limit: int) -> bytes:
        """GET a whole file or a (offset, length) range, retrying what may pass.

        Retried: connection errors, stalls, 5xx and 429, an expired session (401/403, after a
        new login), short answers. Raised at once: 404 (as FileNotFoundError), other statuses.
        """
        what = name if span is None else f"{name} bytes {span[0]}-{span[0] + span[1] - 1}"
        last = "no attempt"
        for attempt in range(1, self.retry.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.retry.delay(attempt - 1))
            if self._cookie_value is None:
                self._cookie_value = await self._cookie()
            headers = {"Cookie": f"vmware_soap_session={self._cookie_value}"}
            if span is not None:
                headers["Range"] = f"bytes={span[0]}-{span[0] + span[1] - 1}"
            try:
                async with self._session.get(url, headers=headers) as resp:
                    if resp.status in (401, 403):
                        self._cookie_value = None  # session expired: log in again and retry
                        last = f"HTTP {resp.status}"
                        continue
                    if resp.status == 404:
                        raise FileNotFoundError(name)
                    if resp.status >= 500 or resp.status == 429:
                        last = f"HTTP {resp.status}"
                        continue
                    if resp.status not in (200, 206):
                        raise DownloadError(f"reading {what}: HTTP {resp.status}", retryable=False)
                    if (resp.content_length or 0) > limit and not (span and resp.status == 200):
                        raise DownloadError(f"{name} is larger than {limit} bytes", retryable=False)
                    data = await resp.read()
                    expected = resp.content_length
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if span is not None and resp.status == 200:  # a server that ignored Range
                data, expected = data[span[0] : span[0] + span[1]], span[1]
            want = span[1] if span is not None else expected
            if want is None or len(data) == want:
                return data
            last = f"short read: {len(data)} of {want} bytes"
        raise DownloadError(
            f"reading {what} failed after {self.retry.attempts} attempts: {last}", retryable=True
        )


@dataclass(frozen=True)
class DatastoreDisk:
    """A disk (flat extent) on a datastore, readable by byte ranges: a repository DiskSource."""

    client: DatastoreHTTP
    url: str
    name: str
    capacity: int

    async def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.capacity:
            raise ValueError(f"range {offset}+{length} is outside {self.name} ({self.capacity})")
        if length == 0:
            return b""
        return await self.client.get_range(self.url, self.name, offset, length)
