"""Reading disks over the datastore HTTP API (`/folder/<path>?dcPath=..&dsName=..`).

This is how vbm reads a snapshot's frozen flat disk: ranged GETs with the vCenter session's
`vmware_soap_session` cookie. A read that fails in a way that may pass (connection reset, cut
short, 5xx, a stalled transfer past `stall_timeout`) is retried with backoff a bounded number of
times; the bytes returned are always exactly the range asked for, or an error is raised.

The exchanges themselves are blocking `http.client` requests (module `transfer`) run in a
small thread pool of the client's own, one keep-alive connection per thread: the socket reads
release the GIL (TLS decryption too), and `read_into` receives a range straight into the
caller's buffer, so a 4 MiB window costs no allocation and no copy in Python. Retries, backoff,
re-login and cancellation stay on the event loop; cancelling a read shuts its socket down, so
even a hung transfer ends at once and its thread is free again.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from shared.vsphere.transfer import Blocking, DownloadError, _Again, _Exchange, _Missing, _Relogin

__all__ = ["CookieSource", "DatastoreDisk", "DatastoreHTTP", "DownloadError", "RetryPolicy"]

CookieSource = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2.0 ** (attempt - 1)))


class DatastoreHTTP(Blocking):
    """One HTTP client per vCenter; open disks with `disk()`; close when done."""

    def __init__(
        self,
        base_url: str,
        cookie: CookieSource,
        *,
        verify_tls: bool = True,
        ca_file: str | None = None,
        connections: int = 4,
        stall_timeout: float = 60.0,
        connect_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        thumbprint: str | None = None,
    ) -> None:
        """`thumbprint` pins the server's certificate by its SHA-1 or SHA-256 fingerprint (hex,
        colons optional), as vSphere hands them out for an ESXi host's NFC URLs; the certificate
        chain is then not checked, the fingerprint is."""
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"datastore URL {base_url!r} is not an http(s) URL with a host")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        self._tls: ssl.SSLContext | None = None
        self.verify_tls, self.ca_file = verify_tls, ca_file
        self._pin = thumbprint.replace(":", "").lower() if thumbprint else None
        if self._https:
            if self._pin:
                self._tls = ssl._create_unverified_context()
            elif verify_tls:
                self._tls = ssl.create_default_context(cafile=ca_file)
            else:
                self._tls = ssl._create_unverified_context()
        self._cookie = cookie
        self.retry = retry or RetryPolicy()
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self._pool = ThreadPoolExecutor(max(1, connections), thread_name_prefix="vbm-http")
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()
        self._cookie_value: str | None = None
        self._active: set[_Exchange] = set()
        self._closed = False
        # Hears of every range read's time to first byte (url, seconds): storage latency control.
        self.observer: Callable[[str, float], None] | None = None

    @property
    def cookie_source(self) -> CookieSource:
        return self._cookie

    async def close(self) -> None:
        self._closed = True
        for exchange in list(self._active):
            exchange.abort()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

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
            data = await self._fetch(self.url(datacenter, datastore, path), path, None, limit, None)
        except FileNotFoundError:
            return None
        assert data is not None
        return data

    async def get_range(self, url: str, name: str, offset: int, length: int) -> bytes:
        try:
            data = await self._fetch(url, name, (offset, length), length, None)
        except FileNotFoundError:
            raise DownloadError(f"{name} does not exist on the datastore", retryable=False) from None
        assert data is not None
        return data

    async def read_range_into(
        self, url: str, name: str, offset: int, buf: memoryview, tick: Callable[[int], None] | None = None
    ) -> None:
        """Fill `buf` with the bytes at `offset` (exactly len(buf) of them), or raise; `tick`
        hears of the bytes as they arrive (from a pool thread)."""
        try:
            await self._fetch(url, name, (offset, len(buf)), len(buf), buf, tick)
        except FileNotFoundError:
            raise DownloadError(f"{name} does not exist on the datastore", retryable=False) from None

    async def put_file(
        self,
        datacenter: str,
        datastore: str,
        path: str,
        body: AsyncIterator[bytes | memoryview],
        size: int,
    ) -> None:
        """Upload `size` bytes from `body` as the datastore file `path` (created or replaced).

        One PUT with a Content-Length, streamed from a pool thread that pulls each piece from the
        event loop (so memory stays at a piece or two). An upload cannot resume: a failure raises
        DownloadError (retryable when it may pass) and the caller starts the file over. A body
        that yields more or fewer than `size` bytes is an error, and the upload is abandoned.
        """
        await self.put_url(self.url(datacenter, datastore, path), path, body, size)

    async def put_url(self, url: str, name: str, body: AsyncIterator[bytes | memoryview], size: int) -> None:
        """Upload `size` bytes to a URL of this client's host (a datastore file, an NFC lease's
        disk); what `put_file` says holds here too. `name` names it in errors."""
        if not url.startswith(self.base_url + "/"):
            raise ValueError(f"{url} is not on {self.base_url}")
        path = name
        target = url[len(self.base_url) :]
        loop = asyncio.get_running_loop()
        if self._cookie_value is None:
            self._cookie_value = await self._cookie()
        headers = {
            "Cookie": f"vmware_soap_session={self._cookie_value}",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        exchange = _Exchange()
        self._active.add(exchange)
        try:
            await loop.run_in_executor(
                self._pool, self._upload, target, headers, path, body, size, loop, exchange
            )
            return
        except asyncio.CancelledError:
            exchange.abort()
            raise
        except _Relogin as exc:
            # the body is spent: forget the cookie (the next call logs in again) and let the
            # caller start the file over with a fresh body
            self._cookie_value = None
            raise DownloadError(
                f"uploading {path}: {exc}: the session expired; log in again and start the file over",
                retryable=True,
            ) from None
        except _Missing:
            raise DownloadError(
                f"uploading {path}: the datastore or its folder does not exist", retryable=False
            ) from None
        except _Again as exc:
            raise DownloadError(f"uploading {path}: {exc}", retryable=True) from None
        finally:
            self._active.discard(exchange)

    async def _fetch(
        self,
        url: str,
        name: str,
        span: tuple[int, int] | None,
        limit: int,
        into: memoryview | None,
        tick: Callable[[int], None] | None = None,
    ) -> bytes | None:
        """GET a whole file or a (offset, length) range, retrying what may pass.

        Retried: connection errors, stalls, 5xx and 429, an expired session (401/403, after a
        new login), short answers. Raised at once: 404 (as FileNotFoundError), other statuses.
        """
        what = name if span is None else f"{name} bytes {span[0]}-{span[0] + span[1] - 1}"
        target = url[len(self.base_url) :] if url.startswith(self.base_url) else url
        loop = asyncio.get_running_loop()
        last = "no attempt"
        for attempt in range(1, self.retry.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.retry.delay(attempt - 1))
            if self._closed:
                raise DownloadError(
                    f"reading {what}: stopped, the datastore client was closed", retryable=True
                )
            if self._cookie_value is None:
                self._cookie_value = await self._cookie()
            headers = {"Cookie": f"vmware_soap_session={self._cookie_value}"}
            if span is not None:
                headers["Range"] = f"bytes={span[0]}-{span[0] + span[1] - 1}"
            exchange = _Exchange(tick)
            self._active.add(exchange)
            try:
                got = await loop.run_in_executor(
                    self._pool, self._exchange, target, headers, what, span, limit, into, exchange
                )
                if self.observer is not None and exchange.first_byte is not None and span is not None:
                    self.observer(url, exchange.first_byte)
                return got
            except _Missing:
                raise FileNotFoundError(name) from None
            except asyncio.CancelledError:
                exchange.abort()  # the thread's socket is shut down: it returns promptly
                raise
            except _Relogin as exc:
                self._cookie_value = None
                last = str(exc)
            except _Again as exc:
                last = str(exc)
            finally:
                self._active.discard(exchange)
        raise DownloadError(
            f"reading {what} failed after {self.retry.attempts} attempts: {last}", retryable=True
        )


class DatastoreDisk:
    """A disk (flat extent) on a datastore, readable by byte ranges: a repository DiskSource.
    `received` counts the bytes as they arrive, so a slow read shows it is alive before its
    window is done."""

    def __init__(self, client: DatastoreHTTP, url: str, name: str, capacity: int) -> None:
        self.client, self.url, self.name, self.capacity = client, url, name, capacity
        self.received = 0

    def _tick(self, n: int) -> None:
        self.received += n  # from pool threads: a sign of life, not an exact count

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.capacity:
            raise ValueError(f"range {offset}+{length} is outside {self.name} ({self.capacity})")

    async def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        if length == 0:
            return b""
        return await self.client.get_range(self.url, self.name, offset, length)

    async def read_into(self, offset: int, buf: memoryview) -> None:
        self._check(offset, len(buf))
        if len(buf):
            await self.client.read_range_into(self.url, self.name, offset, buf, self._tick)
