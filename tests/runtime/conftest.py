"""The bus tests' connection: a `Bus` on the test's NATS server, its stream declared."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.runtime.bus import Bus
from tests.plugins.nats import NatsServer


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_server.url, "test")
    await b.ensure_stream()
    yield b
    await b.close()
