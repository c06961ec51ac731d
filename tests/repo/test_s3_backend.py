"""The S3 backend against a real S3 server (SeaweedFS): the contract, then S3's own faults."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.repo import Repository
from shared.repo.backends.s3 import S3Backend
from shared.repo.errors import RepoError
from tests.plugins.s3 import S3Server
from tests.repo.contract import BackendContract


def backend_for(server: S3Server, bucket: str, **kw: object) -> S3Backend:
    return S3Backend(
        f"s3://{server.endpoint}/{bucket}/repo?tls=false", server.access_key, server.secret_key, **kw
    )  # type: ignore[arg-type]


class TestS3Contract(BackendContract):
    @pytest.fixture
    def backend(self, s3_server: S3Server, s3_bucket: str) -> S3Backend:
        return backend_for(s3_server, s3_bucket)


async def test_a_repository_lives_under_the_prefix(s3_server: S3Server, s3_bucket: str) -> None:
    b = backend_for(s3_server, s3_bucket)
    repo = await Repository.init(b)
    await b.put_if_absent("chunks/x", b"x")
    names = sorted(o.object_name for o in s3_server.client().list_objects(s3_bucket, recursive=True))
    assert names and all(n.startswith("repo/") for n in names)
    assert (await Repository.open(backend_for(s3_server, s3_bucket))).config.id == repo.config.id


async def test_exists_refreshes_an_old_object_and_gc_spares_it(s3_server: S3Server, s3_bucket: str) -> None:
    b = backend_for(s3_server, s3_bucket, refresh_after=timedelta(0))
    await b.put_if_absent("chunks/old", b"data")
    first = (await b.stat("chunks/old")).modified
    await asyncio.sleep(1.1)  # S3 times have seconds
    cutoff = datetime.now(UTC).replace(microsecond=0)  # S3 keeps whole seconds
    assert await b.exists("chunks/old")  # a backup relies on it now: refreshed
    assert (await b.stat("chunks/old")).modified > first
    assert await b.delete_if_unused_since("chunks/old", cutoff) is None
    assert await b.get("chunks/old") == b"data"
    assert await b.delete_if_unused_since("chunks/old", datetime.now(UTC) + timedelta(minutes=1)) == 4
    assert not await b.exists("chunks/old")
    assert await b.delete_if_unused_since("chunks/old", datetime.now(UTC)) is None  # gone: nothing


async def test_wrong_credentials_are_refused_clearly_and_never_shown(
    s3_server: S3Server, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "not-the-secret-" + os.urandom(4).hex()
    b = S3Backend(f"s3://{s3_server.endpoint}/{s3_bucket}?tls=false", s3_server.access_key, secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RepoError, match=r"credentials were refused .* VBM_S3__ACCESS_KEY") as err:
        await b.put_if_absent("k", b"x")
    assert secret not in str(err.value) and secret not in caplog.text
    with pytest.raises(ValueError, match="carries no credentials"):
        S3Backend(f"s3://key:{secret}@{s3_server.endpoint}/{s3_bucket}", "a", "b")


async def test_a_missing_bucket_and_a_dead_endpoint_say_what_to_do(
    s3_server: S3Server, private_s3_server: S3Server
) -> None:
    b = backend_for(s3_server, "vbm-no-such-bucket")
    with pytest.raises(RepoError, match="bucket vbm-no-such-bucket does not exist: create it"):
        await b.put_if_absent("k", b"x")
    private_s3_server.client().make_bucket("vbm-gone")
    b = backend_for(private_s3_server, "vbm-gone", timeout=3)
    await b.put_if_absent("k", b"x")
    private_s3_server.kill()
    t0 = time.monotonic()
    with pytest.raises(RepoError, match="cannot reach the S3 endpoint"):
        await b.get("k")
    assert time.monotonic() - t0 < 30  # retried with backoff, then given up


async def test_a_stalled_server_is_an_error_and_a_restart_is_survived(private_s3_server: S3Server) -> None:
    private_s3_server.client().make_bucket("vbm-stall")
    b = backend_for(private_s3_server, "vbm-stall", timeout=2)
    data = os.urandom(1 << 20)
    assert await b.put_if_absent("k", data)
    private_s3_server.pause()
    try:
        with pytest.raises(RepoError, match="cannot reach the S3 endpoint"):
            await b.get("k")
    finally:
        private_s3_server.resume()
    assert await b.get("k") == data


def test_locations_are_checked() -> None:
    for bad in ("s3://", "s3://host", "http://host/bucket", "s3:///bucket"):
        with pytest.raises(ValueError, match="not an S3 location"):
            S3Backend(bad, "a", "b")
    b = S3Backend("s3://h:9000/bkt/a/b?tls=false&region=eu-1", "a", "b")
    assert (b.where.bucket, b.where.prefix, b.where.secure, b.where.region) == ("bkt", "a/b/", False, "eu-1")
