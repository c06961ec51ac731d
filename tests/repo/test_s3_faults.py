"""The S3 backend's network faults (the fault contract), through a fault proxy before SeaweedFS.

(Here rather than in test_s3_backend.py, which another change is editing.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from shared.repo import Backend
from shared.repo.s3 import S3Backend
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.s3 import S3Server
from tests.repo.contract import FAULT_TIMEOUT, HTTPFaultContract


class TestS3Faults(HTTPFaultContract):
    def where(self, backend: Backend) -> str:
        assert isinstance(backend, S3Backend)
        return f"s3://{backend.where.endpoint}/{backend.where.bucket}"

    @pytest.fixture
    def secrets(self, s3_server: S3Server) -> list[str]:
        return [s3_server.secret_key]

    @pytest.fixture
    async def faulty(
        self, s3_server: S3Server, s3_bucket: str, fault_proxy: Callable[[str, int], FaultProxy]
    ) -> AsyncIterator[tuple[S3Backend, FaultProxy]]:
        proxy = fault_proxy(s3_server.host, s3_server.port)
        b = S3Backend(
            f"s3://{proxy.address}/{s3_bucket}/repo?tls=false",
            s3_server.access_key,
            s3_server.secret_key,
            timeout=FAULT_TIMEOUT,
            backoff=0.05,
        )
        yield b, proxy
        await b.close()
