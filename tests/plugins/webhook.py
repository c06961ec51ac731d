"""A local HTTP receiver standing in for Slack's, Teams' and anyone's webhook endpoints.

Slack's and Microsoft's servers cannot be reached from here; this is the one fake the brief
allows. It is a real aiohttp server on a free loopback port (its own thread and loop), so the
code under test goes through a real HTTP exchange. `answers` lists the statuses of the next
requests (then 200); `hang` makes every request wait without answering until the test ends.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.plugins.procs import free_port

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.answers: list[int] = []
        self.hang = False
        self._received: list[Received] = []
        self._lock = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="webhook-receiver", daemon=True)
        self._ready = threading.Event()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self._received.append(Received(request.path, dict(request.headers), body))
            self._lock.notify_all()
            status = self.answers.pop(0) if self.answers else 200
        if self.hang:
            assert self._stopped is not None
            await self._stopped.wait()
        return web.Response(
            status=status, text="ok" if status == 200 else f"answer {status} from the receiver"
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stopped = asyncio.Event()
            app = web.Application()
            app.router.add_route("POST", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await self._stopped.wait()
            await runner.cleanup()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def start(self) -> WebhookReceiver:
        self._thread.start()
        assert self._ready.wait(10), "the webhook receiver did not start"
        return self

    def stop(self) -> None:
        """Stop it (a test may, to make deliveries fail); again is a no-op."""
        if self._stopped is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, n: int = 1, timeout: float = 10.0, path: str | None = None) -> list[Received]:
        """Block until `n` requests (to `path`, if given) arrived; return those."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self._received if path is None or r.path == path]
                if len(got) >= n:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {n} request(s) to {path or 'any path'}, got {len(got)}")
                self._lock.wait(remaining)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
