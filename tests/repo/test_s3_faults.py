"""The S3 backend's network faults (the fault contract), through a fault proxy before SeaweedFS.

(Here rather than in test_s3_backend.py, which another change is editing.)"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest

from shared.repo import Backend
from shared.repo.backends.s3 import S3Backend
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.s3 import S3Server
from tests.repo.contract import FAULT_TIMEOUT, HTTPFaultContract, MiB


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


async def test_the_largest_object_is_one_put_and_a_cut_upload_leaves_no_multipart_upload(
    s3_server: S3Server, s3_bucket: str, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    proxy = fault_proxy(s3_server.host, s3_server.port)
    b = S3Backend(
        f"s3://{proxy.address}/{s3_bucket}/repo?tls=false", s3_server.access_key, s3_server.secret_key
    )
    data = os.urandom(64 * MiB + 20)  # the largest chunk object: 64 MiB of plain bytes and a header
    proxy.reset(10 * MiB, "up")
    try:
        assert await b.put_if_absent("chunks/big", data)
        assert proxy.faults == 1
        assert await b.get("chunks/big", 64 * MiB) == data[64 * MiB :]
    finally:
        await b.close()
    uploads = s3_server.client()._list_multipart_uploads(s3_bucket)
    assert uploads.uploads == []  # never a multipart upload, so none is left behind
