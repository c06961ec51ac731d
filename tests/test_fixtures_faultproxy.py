"""The fault proxy forwards faithfully, and serves each fault as armed, for as many connections."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.plugins.faultproxy import FOREVER, FaultProxy

MiB = 1 << 20
DATA = bytes(range(256)) * (MiB // 256)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the backends' clients use it

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = str(len(body)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(http_server: tuple[str, int], fault_proxy: Callable[[str, int], FaultProxy]) -> FaultProxy:
    return fault_proxy(*http_server)


def _conn(proxy: FaultProxy, timeout: float = 5) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout)


def _get(proxy: FaultProxy, timeout: float = 5) -> bytes:
    c = _conn(proxy, timeout)
    try:
        c.request("GET", "/")
        return c.getresponse().read()
    finally:
        c.close()


def test_forwards_both_ways_and_counts(proxy: FaultProxy) -> None:
    c = _conn(proxy)
    c.request("PUT", "/x", body=DATA)
    assert c.getresponse().read() == str(MiB).encode()
    c.request("GET", "/")  # the same (kept-alive) connection
    assert c.getresponse().read() == DATA
    c.close()
    assert (proxy.connections, proxy.faults) == (1, 0)


def test_a_reset_cuts_the_transfer_with_an_rst_then_passes(proxy: FaultProxy) -> None:
    proxy.reset(200_000, "down")
    c = _conn(proxy)
    c.request("GET", "/")
    resp = c.getresponse()
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        resp.read()
    c.close()
    proxy.reset(100_000, "up")
    c = _conn(proxy)
    with pytest.raises((ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        c.request("PUT", "/x", body=DATA * 4)
        c.getresponse().read()
    c.close()
    assert proxy.faults == 2
    assert _get(proxy) == DATA  # count=1: the next connection passes


def test_a_stall_holds_until_cleared(proxy: FaultProxy) -> None:
    proxy.stall(10_000, "down", count=FOREVER)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            _get(proxy, timeout=0.3)
    held = socket.create_connection((proxy.host, proxy.port))
    held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    held.settimeout(0.3)
    got = b""
    with pytest.raises(TimeoutError):
        while True:
            got += held.recv(65536)
    assert 0 < len(got) <= 10_000
    proxy.clear()
    held.settimeout(2)
    assert held.recv(65536) == b""  # a stalled connection is closed by clear()
    held.close()
    assert proxy.faults == 3
    assert _get(proxy) == DATA


def test_an_http_status_answers_each_request_then_passes(proxy: FaultProxy) -> None:
    proxy.http_status(503, count=2, retry_after=1)
    for method, body in (("PUT", DATA), ("HEAD", None)):
        c = _conn(proxy)
        c.request(method, "/k", body=body)
        resp = c.getresponse()
        text = resp.read()
        assert resp.status == 503 and resp.getheader("Retry-After") == "1"
        assert resp.getheader("Connection") == "close"
        assert (b"<Code>SlowDown</Code>" in text) == (method != "HEAD")
        c.close()
    proxy.http_status(500)
    c = _conn(proxy)
    c.request("GET", "/")
    resp = c.getresponse()
    assert resp.status == 500 and b"<Code>InternalError</Code>" in resp.read()
    c.close()
    assert proxy.faults == 3 and proxy.fault_times == sorted(proxy.fault_times)
    assert _get(proxy) == DATA


def test_arming_closes_kept_alive_connections_and_refuse_closes_at_once(proxy: FaultProxy) -> None:
    kept = _conn(proxy)
    kept.request("GET", "/")
    assert kept.getresponse().read() == DATA
    proxy.refuse(count=FOREVER)
    assert kept.sock is not None
    kept.sock.settimeout(2)
    assert kept.sock.recv(1) == b""  # closed by the arming: a pool opens a new one
    kept.close()
    t0 = time.monotonic()
    for _ in range(3):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            _get(proxy)
    assert time.monotonic() - t0 < 2 and proxy.faults == 3
    proxy.clear()
    assert _get(proxy) == DATA


def test_a_context_manager_and_a_dead_target() -> None:
    with (
        FaultProxy("127.0.0.1", 1) as dead,  # nothing listens on port 1
        pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)),
    ):
        _get(dead)
    with pytest.raises(RuntimeError, match="not started"):
        dead.refuse()
