"""The gateway app on a real Context: private NATS JetStream, a real database, the lab as vCenter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lab.launcher import Lab
from services.gateway.app import create_app
from shared.catalog import apikeys
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.runtime.bus import Bus
from shared.runtime.outbox import Relay
from shared.runtime.service import Context, utcnow
from shared.settings import Settings, VCenterSettings
from tests.plugins.nats import NatsServer


@dataclass
class Api:
    client: TestClient[Any, Any]
    ctx: Context
    key: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {apikeys.HEADER: self.key}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        async with self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs) as resp:
            return resp.status, await resp.json()

    def new_key(self, name: str) -> str:
        with self.ctx.sessions.begin() as s:
            return apikeys.create(s, name, utcnow())[1]


def lab_vcenter(lab: Lab, name: str = "lab") -> VCenterSettings:
    return VCenterSettings(
        name=name, url=lab.sdk_url, username=lab.username, password=lab.password, verify_tls=False
    )


MakeApi = Callable[..., Awaitable[Api]]


async def open_api(
    nats_url: str,
    data_dir: Path,
    db_url: str,
    vcenters: tuple[VCenterSettings, ...] = (),
    with_key: bool = True,
    **extra: Any,
) -> tuple[Api, Callable[[], Awaitable[None]]]:
    """A running app on the current event loop and the coroutine function that stops it all."""
    settings = Settings(data_dir=data_dir, database_url=db_url, vcenters=vcenters, **extra)
    engine = make_engine(db_url)
    await asyncio.to_thread(upgrade, engine)
    bus = await Bus.connect(nats_url, "t")
    await bus.ensure_stream()
    sessions = make_sessionmaker(engine)
    stop = asyncio.Event()
    relay = Relay(bus, sessions, utcnow, interval=30)  # long interval: only kick() publishes fast
    ctx = Context("gateway", "gateway-test", settings, bus, engine, sessions, stop, relay)
    relay_task = asyncio.create_task(relay.run(stop))
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(ctx)))
    await client.start_server()

    async def close() -> None:
        await client.close()
        stop.set()
        relay.kick()
        await relay_task
        await bus.close()
        engine.dispose()

    api = Api(client, ctx)
    if with_key:
        api.key = api.new_key("tests")
    return api, close


@pytest.fixture
async def make_api(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[MakeApi]:
    """make_api(db_url, vcenters=(), with_key=True, **settings): a running app; everything stopped
    after."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(
        db_url: str, vcenters: tuple[VCenterSettings, ...] = (), with_key: bool = True, **extra: Any
    ) -> Api:
        api, close = await open_api(nats_server.url, tmp_path / "data", db_url, vcenters, with_key, **extra)
        cleanups.append(close)
        return api

    yield make
    for close in reversed(cleanups):
        await close()
