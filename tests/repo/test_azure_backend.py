"""The Azure Blob backend against a real Blob server (Azurite): the contract, then its faults."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.repo import Backend, Repository
from shared.repo.backends.azure import AzureBackend, AzureLocation
from shared.repo.errors import RepoError
from tests.plugins.azurite import AzuriteServer
from tests.plugins.faultproxy import FaultProxy
from tests.repo.contract import FAULT_TIMEOUT, BackendContract, HTTPFaultContract


def backend_for(server: AzuriteServer, container: str, key: str | None = None, **kw: object) -> AzureBackend:
    location = f"azure://{server.account}/{container}/repo?endpoint={server.endpoint}"
    return AzureBackend(location, key or server.key, **kw)  # type: ignore[arg-type]


class TestAzureContract(BackendContract):
    @pytest.fixture
    def backend(self, azurite_server: AzuriteServer, azure_container: str) -> AzureBackend:
        return backend_for(azurite_server, azure_container)


class TestAzureFaults(HTTPFaultContract):
    def where(self, backend: Backend) -> str:
        assert isinstance(backend, AzureBackend)
        return f"azure://{backend.where.account}/{backend.where.container}"

    @pytest.fixture
    def secrets(self, azurite_server: AzuriteServer) -> list[str]:
        return [azurite_server.key]

    @pytest.fixture
    async def faulty(
        self,
        azurite_server: AzuriteServer,
        azure_container: str,
        fault_proxy: Callable[[str, int], FaultProxy],
    ) -> AsyncIterator[tuple[AzureBackend, FaultProxy]]:
        proxy = fault_proxy(azurite_server.host, azurite_server.port)
        endpoint = f"http://{proxy.address}/{azurite_server.account}"
        b = AzureBackend(
            f"azure://{azurite_server.account}/{azure_container}/repo?endpoint={endpoint}",
            azurite_server.key,
            timeout=FAULT_TIMEOUT,
            retries=2,
            backoff=0.1,
        )
        yield b, proxy
        await b.close()


async def test_a_repository_lives_under_the_prefix(
    azurite_server: AzuriteServer, azure_container: str
) -> None:
    b = backend_for(azurite_server, azure_container)
    repo = await Repository.init(b)
    names = [x.name for x in azurite_server.client().get_container_client(azure_container).list_blobs()]
    assert names and all(n.startswith("repo/") for n in names)
    assert (await Repository.open(backend_for(azurite_server, azure_container))).config.id == repo.config.id


async def test_a_refresh_moves_the_time_and_gc_spares_it_atomically(
    azurite_server: AzuriteServer, azure_container: str
) -> None:
    b = backend_for(azurite_server, azure_container, refresh_after=timedelta(0))
    await b.put_if_absent("chunks/old", b"data")
    first = (await b.stat("chunks/old")).modified
    await asyncio.sleep(1.1)
    cutoff = datetime.now(UTC).replace(microsecond=0)
    assert await b.exists("chunks/old")  # a backup relies on it now: refreshed
    assert (await b.stat("chunks/old")).modified > first
    assert await b.delete_if_unused_since("chunks/old", cutoff) is None
    assert await b.get("chunks/old") == b"data"
    assert await b.delete_if_unused_since("chunks/old", datetime.now(UTC) + timedelta(minutes=1)) == 4
    assert not await b.exists("chunks/old")
    assert await b.delete_if_unused_since("chunks/old", datetime.now(UTC)) is None


async def test_a_refused_key_and_a_missing_container_say_what_to_do(
    azurite_server: AzuriteServer, azure_container: str, caplog: pytest.LogCaptureFixture
) -> None:
    import base64
    import os

    wrong = base64.b64encode(os.urandom(32)).decode()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RepoError, match=r"account key was refused .* VBM_AZURE__ACCOUNT_KEY") as err:
        await backend_for(azurite_server, azure_container, key=wrong).put_if_absent("k", b"x")
    assert wrong not in str(err.value) and wrong not in caplog.text
    with pytest.raises(RepoError, match="container vbm-none does not exist: create it"):
        await backend_for(azurite_server, "vbm-none").put_if_absent("k", b"x")
    with pytest.raises(ValueError, match="carries no key"):
        AzureBackend(f"azure://acct:{wrong}@x/c", "k")


async def test_a_dead_or_stalled_endpoint_is_an_error(private_azurite_server: AzuriteServer) -> None:
    private_azurite_server.client().create_container("vbm-faults")
    b = backend_for(private_azurite_server, "vbm-faults", timeout=2, retries=1)
    await b.put_if_absent("k", b"x" * 1000)
    private_azurite_server.pause()
    try:
        with pytest.raises(RepoError, match="cannot reach the Blob endpoint"):
            await b.get("k")
    finally:
        private_azurite_server.resume()
    assert await b.get("k") == b"x" * 1000
    private_azurite_server.kill()
    t0 = time.monotonic()
    with pytest.raises(RepoError, match="cannot reach the Blob endpoint"):
        await b.get("k")
    assert time.monotonic() - t0 < 60


def test_locations_are_checked() -> None:
    for bad in ("azure://", "azure://acct", "s3://a/b"):
        with pytest.raises(ValueError, match="not an Azure Blob location"):
            AzureBackend(bad, "a2V5")
    w = AzureLocation("azure://acct/cont/a/b")
    assert (w.account, w.container, w.prefix, w.endpoint) == (
        "acct",
        "cont",
        "a/b/",
        "https://acct.blob.core.windows.net",
    )
    assert (
        AzureLocation("azure://acct/c?endpoint=http://127.0.0.1:9/acct").endpoint == "http://127.0.0.1:9/acct"
    )
