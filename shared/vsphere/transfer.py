"""The blocking side of datastore HTTP, run on `DatastoreHTTP`'s pool threads: keep-alive
connections (a pinned certificate for an ESXi host's NFC), one GET or PUT exchange each, the
answer read straight into the caller's buffer, and what a failure means (retry or not).

An exchange can be aborted from the event loop: its socket is shut down, so even a hung transfer
ends at once. The errors `_Again`, `_Relogin` and `_Missing` say to the async side what to do next.
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
from collections.abc import AsyncIterator, Callable
from typing import Any


class DownloadError(Exception):
    """A disk read failed for good; the message names the file, the range and the cause."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


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


class Blocking:
    """`DatastoreHTTP`'s methods that run on its pool threads (the attributes are its own)."""

    _host: str
    _port: int
    _prefix: str
    _tls: ssl.SSLContext | None
    _pin: str | None
    _idle: list[http.client.HTTPConnection]
    _idle_lock: threading.Lock
    _closed: bool
    stall_timeout: float
    connect_timeout: float

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
