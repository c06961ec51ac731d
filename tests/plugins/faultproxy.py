"""A TCP proxy that puts network faults between a client and a real server (tests only).

``FaultProxy(host, port)`` listens on a free loopback port and forwards every connection to
``host:port``. It runs its own asyncio loop in a daemon thread, so it works whatever the test's
loop does (blocking clients in worker threads, asyncssh in the test's loop, other processes).

Faults are armed for the next ``count`` connections (``FOREVER``: every one until ``clear()``);
arming first closes every proxied connection (a FIN both ways), so a client's pooled keep-alive
connections are opened again and meet the fault:

- ``reset(after_bytes, direction="down", count=1)``: forward, then abort both sides with an RST
  (SO_LINGER 0) once ``after_bytes`` went that way ("down": server to client; "up": the other);
- ``stall(after_bytes=0, direction="down", count=1)``: forward, then stop forwarding both ways,
  the sockets kept open until ``clear()`` or ``stop()``;
- ``http_status(status, count=1, retry_after=None)``: for HTTP servers; read the request (its
  head, and a body up to ``BODY_CAP``), answer ``status`` with an S3-style XML error
  (``SlowDown`` for 429/503, ``InternalError`` else) and ``Connection: close``;
- ``refuse(count=1)``: accept and close at once;
- ``clear()``: no fault for new connections; stalled ones are closed.

``faults`` counts the faulted connections and ``fault_times`` says when each was accepted
(``time.monotonic()``), so a test can see the gap a client's backoff left between retries;
``connections`` / ``connection_times`` are the same for every connection.

The ``fault_proxy`` fixture makes proxies (``fault_proxy(host, port)``) stopped after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pytest

from tests.plugins.procs import free_port

__all__ = ["BODY_CAP", "FOREVER", "FaultProxy", "fault_proxy"]

FOREVER = None
BODY_CAP = 128 << 20  # an HTTP fault reads at most this much of a request body
PIECE = 64 * 1024
Direction = Literal["down", "up"]
T = TypeVar("T")

_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


@dataclass(frozen=True)
class _Fault:
    kind: Literal["reset", "stall", "http", "refuse"]
    after: int = 0
    direction: Direction = "down"
    status: int = 0
    retry_after: int | None = None


class _Conn:
    """One accepted connection and, once opened, its upstream."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.done = False
        self.stalled = False
        self.released = asyncio.Event()
        self.task = asyncio.current_task()

    def _writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.server) if w is not None]

    def close(self) -> None:
        """Close both sides gracefully (FIN); again: whatever was opened since."""
        self.done = True
        self.released.set()
        for w in self._writers():
            if not w.is_closing():
                with contextlib.suppress(Exception):
                    w.close()

    async def reset(self) -> None:
        """Abort both sides with an RST, once what was forwarded so far has left our buffers."""
        self.done = True
        self.released.set()
        for w in self._writers():
            with contextlib.suppress(Exception):
                for _ in range(100):
                    if w.transport.get_write_buffer_size() == 0:
                        break
                    await asyncio.sleep(0.01)
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()


class FaultProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.host = "127.0.0.1"
        self.port = 0
        self.connection_times: list[float] = []
        self.fault_times: list[float] = []
        self._fault: _Fault | None = None
        self._remaining: int | None = 0
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"<FaultProxy {self.address} -> {self.target[0]}:{self.target[1]} faults={self.faults}>"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self.connection_times)

    @property
    def faults(self) -> int:
        return len(self.fault_times)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"faultproxy->{self.target}", daemon=True
        )
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------

    def reset(self, after_bytes: int, direction: Direction = "down", count: int | None = 1) -> None:
        self._arm(_Fault("reset", after=after_bytes, direction=direction), count)

    def stall(self, after_bytes: int = 0, direction: Direction = "down", count: int | None = 1) -> None:
        self._arm(_Fault("stall", after=after_bytes, direction=direction), count)

    def http_status(self, status: int, count: int | None = 1, retry_after: int | None = None) -> None:
        self._arm(_Fault("http", status=status, retry_after=retry_after), count)

    def refuse(self, count: int | None = 1) -> None:
        self._arm(_Fault("refuse"), count)

    def clear(self) -> None:
        async def run() -> None:
            self._fault, self._remaining = None, 0
            for conn in [c for c in self._conns if c.stalled]:
                conn.close()

        self._call(run())

    def _arm(self, fault: _Fault, count: int | None) -> None:
        if count is not None and count < 1:
            raise ValueError("count is a number of connections (at least 1) or FOREVER")
        if fault.direction not in ("down", "up"):
            raise ValueError(f"direction is 'down' or 'up', not {fault.direction!r}")

        async def run() -> None:
            self._fault, self._remaining = fault, count
            for conn in list(self._conns):
                conn.close()

        self._call(run())

    # -- the loop's side ---------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the fault proxy is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        for attempt in range(5):
            port = free_port(self.host)
            try:
                self._server = await asyncio.start_server(self._handle, self.host, port)
            except OSError:  # taken between free_port() and here
                if attempt == 4:
                    raise
                continue
            self.port = port
            return

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for conn in conns:
            conn.close()
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0.01)  # let the transports' last callbacks run

    def _take(self) -> _Fault | None:
        fault = self._fault
        if fault is None:
            return None
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self._fault = None
        return fault

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        self.connection_times.append(now)
        fault = self._take()
        if fault is not None:
            self.fault_times.append(now)
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            if fault is not None and fault.kind == "refuse":
                return
            if fault is not None and fault.kind == "http":
                await self._answer(reader, writer, fault)
                return
            if fault is not None and fault.kind == "stall" and fault.after == 0:
                await self._stall(conn)
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
            except (OSError, TimeoutError):
                await conn.reset()  # as the server would: nobody there
                return
            conn.server = up_writer
            if conn.done:  # closed by an arming meanwhile
                return
            await asyncio.gather(
                self._pump(conn, reader, up_writer, "up", fault),
                self._pump(conn, up_reader, writer, "down", fault),
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._conns.discard(conn)
            conn.close()

    async def _stall(self, conn: _Conn) -> None:
        conn.stalled = True
        await conn.released.wait()

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        fault: _Fault | None,
    ) -> None:
        limit = None
        if fault is not None and fault.kind in ("reset", "stall") and fault.direction == direction:
            limit = fault.after
        sent = 0
        while not conn.done:
            if conn.stalled:
                await conn.released.wait()
                return
            if limit is not None and sent >= limit:
                assert fault is not None
                if fault.kind == "reset":
                    await conn.reset()
                else:
                    await self._stall(conn)
                return
            data = await reader.read(PIECE if limit is None else min(PIECE, limit - sent))
            if conn.done:
                return
            if conn.stalled:  # the other way stalled while we waited: this is not forwarded
                await conn.released.wait()
                return
            if not data:  # end of stream: passed on as a half-close
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            sent += len(data)

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: _Fault
    ) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ", 1)[0].upper()
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "100-continue" not in headers.get("expect", "").lower():  # else the body never comes
            await asyncio.wait_for(_drain_body(reader, headers), 30)
        code, message = (
            ("SlowDown", "Please reduce your request rate.")
            if fault.status in (429, 503)
            else ("InternalError", "We encountered an internal error. Please try again.")
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>faultproxy</RequestId></Error>"
        ).encode()
        extra = "" if fault.retry_after is None else f"Retry-After: {fault.retry_after}\r\n"
        response = (
            f"HTTP/1.1 {fault.status} {_REASONS.get(fault.status, 'Fault')}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-ms-error-code: {'ServerBusy' if code == 'SlowDown' else code}\r\n"
            f"{extra}Connection: close\r\n\r\n"
        ).encode()
        writer.write(response if method == "HEAD" else response + body)
        await writer.drain()


async def _drain_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Read a request body (up to BODY_CAP), so the client is not cut off while it sends."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while total < BODY_CAP:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return
            await reader.readexactly(size + 2)
            total += size
        return
    left = min(int(headers.get("content-length", "0") or 0), BODY_CAP)
    while left > 0:
        piece = await reader.read(min(PIECE, left))
        if not piece:
            return
        left -= len(piece)


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str, int], FaultProxy]]:
    """Makes started FaultProxy's in front of `host, port`; all are stopped after the test."""
    made: list[FaultProxy] = []

    def make(host: str, port: int) -> FaultProxy:
        proxy = FaultProxy(host, port).start()
        made.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in made:
            proxy.stop()
