"""Reading disks over the datastore HTTP API (`/folder/<path>?dcPath=..&dsName=..`).

This is how vbm reads a snapshot's frozen flat disk: ranged GETs with the vCenter session's
`vmware_soap_session` cookie. A read that fails in a way that may pass (connection reset, cut
short, 5xx, a stalled transfer past `stall_timeout`) is retried with backoff a bounded number of
times; the bytes returned are always exactly the range asked for, or an error is raised.

The exchanges themselves are blocking `http.client` requests run in a small thread pool of the
client's own, one keep-alive connection per thread: the socket reads release the GIL (TLS
decryption too), and `read_into` receives a range straight into the caller's buffer, so a
4 MiB window costs no allocation and no copy in Python. Retries, backoff, re-login and
cancellation stay on the event loop; cancelling a read shuts its socket down, so even a hung
transfer ends at once and its thread is free again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

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


class _Again(Exception):
    """One exchange failed in a way that may pass; the message says how."""


class _Relogin(_Again):
    """The session cookie was refused (expired): log in again, then retry."""


class _Missing(Exception):
    """404: the file does not exist (not an OSError, so no retry handler takes it)."""


def _nothing(_n: int) -> None:
    pass


class _Exchange:
    """One request in flight on a pool thread; `abort()` ends it from the event loop."""

    def __init__(self, tick: Callable[[int], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self.aborted = False
        self.tick: Callable[[int], None] = tick or _nothing
        self.first_byte: float | None = None  # seconds from the request to the answer's headers

    def attach(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.aborted:
                _shutdown(conn)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self._conn is not None:
                _shutdown(self._conn)


def _shutdown(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a host whose certificate is known by its fingerprint (an ESXi host's NFC)."""

    def __init__(self, pin: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pin = pin

    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True) or b""
        algorithm = "sha1" if len(self._pin) == 40 else "sha256"
        if hashlib.new(algorithm, der).hexdigest() != self._pin:
            self.close()
            raise ssl.SSLError(f"{self.host}'s certificate does not match the thumbprint vCenter gave")


class DatastoreHTTP:
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

    def _upload(
        self,
        target: str,
        headers: dict[str, str],
        name: str,
        body: AsyncIterator[bytes | memoryview],
        size: int,
        loop: asyncio.AbstractEventLoop,
        exchange: _Exchange,
    ) -> None:
        conn = self._connection()
        reusable = False
        sent = 0
        try:
            if conn.sock is None:
                conn.connect()
            exchange.attach(conn)
            conn.sock.settimeout(self.stall_timeout)
            conn.putrequest("PUT", self._prefix + target, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            early: http.client.HTTPResponse | None = None
            while (piece := _pull(body, loop, exchange)) is not None:
                sent += len(piece)
                if sent > size:
                    raise DownloadError(
                        f"uploading {name}: the source gave more than {size} bytes", retryable=False
                    )
                try:
                    conn.sock.sendall(piece)
                except OSError:
                    early = _early_answer(conn)  # a server may refuse (503, 507) and close at once
                    if early is None:
                        raise
                    break
            if early is None and sent != size:
                raise DownloadError(
                    f"uploading {name}: the source gave {sent} of {size} bytes", retryable=False
                )
            resp = early or conn.getresponse()
            resp.read()  # vCenter's answers to an upload are small; read to the end to reuse it
            if resp.status in (401, 403):
                raise _Relogin(f"HTTP {resp.status}")
            if resp.status == 404:
                raise _Missing(name)
            if resp.status >= 500 or resp.status == 429:
                raise _Again(f"HTTP {resp.status}")
            if resp.status not in (200, 201, 204):
                raise DownloadError(f"uploading {name}: HTTP {resp.status} {resp.reason}", retryable=False)
            if early is not None:
                raise _Again(f"the server answered HTTP {resp.status} after {sent} of {size} bytes")
            reusable = resp.isclosed() and not resp.will_close
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(
                exc, exchange, f"uploading {name}", f" after {sent} of {size} bytes"
            ) from None
        finally:
            self._done_with(conn, reusable and not exchange.aborted)

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

    # --- the blocking side, on the client's pool threads -----------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        if self._tls is not None and self._pin:
            return _PinnedHTTPSConnection(
                self._pin, self._host, self._port, timeout=self.connect_timeout, context=self._tls
            )
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.connect_timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        if self._closed:
            conn.close()
            return
        with self._idle_lock:
            self._idle.append(conn)

    def _exchange(
        self,
        target: str,
        headers: dict[str, str],
        what: str,
        span: tuple[int, int] | None,
        limit: int,
        into: memoryview | None,
        exchange: _Exchange,
    ) -> bytes | None:
        conn = self._connection()
        reusable = False
        try:
            if conn.sock is None:
                conn.connect()
            exchange.attach(conn)
            conn.sock.settimeout(self.stall_timeout)  # a transfer that goes quiet this long is stalled
            asked = time.monotonic()
            conn.request("GET", self._prefix + target, headers=headers)
            resp = conn.getresponse()
            exchange.first_byte = time.monotonic() - asked
            data, reusable = self._answer(resp, what, span, limit, into, exchange.tick)
            return data
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc, exchange, f"reading {what}") from None
        finally:
            self._done_with(conn, reusable and not exchange.aborted)

    def _failure(self, exc: Exception, exchange: _Exchange, doing: str, where: str = "") -> Exception:
        """What a transport error means: an untrusted certificate is final, the rest may pass."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DownloadError(
                f"{doing}: the TLS certificate of {self._host} is not trusted ({exc.verify_message});"
                " give the CA that signed it (ca_file) or set verify_tls = false",
                retryable=False,
            )
        if exchange.aborted:
            return _Again("aborted")
        kind = "stalled" if isinstance(exc, TimeoutError) else type(exc).__name__
        return _Again(f"{kind}{where}: {exc}" if str(exc) else f"{kind}{where}")

    def _done_with(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable:
            self._release(conn)
        else:
            conn.close()

    def _answer(
        self,
        resp: http.client.HTTPResponse,
        what: str,
        span: tuple[int, int] | None,
        limit: int,
        into: memoryview | None,
        tick: Callable[[int], None] = _nothing,
    ) -> tuple[bytes | None, bool]:
        status = resp.status
        if status in (401, 403):
            raise _Relogin(f"HTTP {status}")
        if status == 404:
            raise _Missing(what)
        if status >= 500 or status == 429:
            raise _Again(f"HTTP {status}")
        if status not in (200, 206):
            raise DownloadError(f"reading {what}: HTTP {status}", retryable=False)
        length = resp.length  # from Content-Length; None when the server did not say
        if span is not None and status == 200:  # a server that ignored Range: skip to the offset
            return self._from_whole(resp, what, span, into, tick), False
        if length is not None and length > limit:
            raise DownloadError(f"{what} is larger than {limit} bytes", retryable=False)
        if span is not None:
            answered = resp.getheader("Content-Range", "")
            if not answered.startswith(f"bytes {span[0]}-{span[0] + span[1] - 1}/"):
                raise _Again(f"the server answered range {answered!r} to a request for {what}")
        if into is not None:
            got = _read_into(resp, into, tick)
            if got != len(into):
                raise _Again(f"short read: {got} of {len(into)} bytes")
            return None, resp.isclosed() and not resp.will_close  # reuse only a fully read answer
        data = resp.read(limit + 1)
        if len(data) > limit:
            raise DownloadError(f"{what} is larger than {limit} bytes", retryable=False)
        want = span[1] if span is not None else length
        if want is not None and len(data) != want:
            raise _Again(f"short read: {len(data)} of {want} bytes")
        return data, resp.isclosed() and not resp.will_close

    def _from_whole(
        self,
        resp: http.client.HTTPResponse,
        what: str,
        span: tuple[int, int],
        into: memoryview | None,
        tick: Callable[[int], None] = _nothing,
    ) -> bytes | None:
        offset, length = span
        skip = offset
        while skip:
            got = len(resp.read(min(skip, 1 << 20)))
            if got == 0:
                raise _Again(f"short read: the file ended before offset {offset}")
            skip -= got
        buf = into if into is not None else memoryview(bytearray(length))
        got = _read_into(resp, buf, tick)
        if got != length:
            raise _Again(f"short read: {got} of {length} bytes")
        return None if into is not None else bytes(buf)


def _early_answer(conn: http.client.HTTPConnection) -> http.client.HTTPResponse | None:
    """The response a server sent before it stopped reading an upload, if there is one."""
    try:
        if conn.sock is not None:
            conn.sock.settimeout(2.0)
        return conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None


async def _next(body: AsyncIterator[bytes | memoryview]) -> bytes | memoryview | None:
    return await anext(body, None)


def _pull(
    body: AsyncIterator[bytes | memoryview], loop: asyncio.AbstractEventLoop, exchange: _Exchange
) -> bytes | memoryview | None:
    """The body's next piece (None at its end), from a pool thread; gives up once aborted."""
    future = asyncio.run_coroutine_threadsafe(_next(body), loop)
    while True:
        try:
            return future.result(timeout=1.0)
        except concurrent.futures.TimeoutError:
            if exchange.aborted:  # the loop may be gone: never wait on it forever
                future.cancel()
                raise OSError("aborted") from None


PIECE = 256 * 1024  # a window is read in pieces this big, each one a sign of life


def _read_into(resp: http.client.HTTPResponse, buf: memoryview, tick: Callable[[int], None]) -> int:
    have = 0
    while have < len(buf):
        n = resp.readinto(buf[have : have + PIECE])
        if not n:
            break
        have += n
        tick(n)
    return have


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
