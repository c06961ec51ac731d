"""The S3 fixtures give a real SeaweedFS S3 with real authentication, on private ports."""

from __future__ import annotations

import io
import os

import pytest
from minio import Minio
from minio.error import S3Error

from tests.plugins.s3 import S3Server


def _put(client: Minio, bucket: str, name: str, data: bytes) -> None:
    client.put_object(bucket, name, io.BytesIO(data), len(data))


def _get(client: Minio, bucket: str, name: str, offset: int = 0, length: int = 0) -> bytes:
    response = client.get_object(bucket, name, offset=offset, length=length)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def test_server_uses_private_ports(s3_server: S3Server) -> None:
    assert s3_server.endpoint == f"127.0.0.1:{s3_server.port}"
    assert s3_server.port != 8333
    assert len(set(s3_server.ports.values())) == len(s3_server.ports)
    assert s3_server.alive
    assert s3_server.access_key and s3_server.secret_key


def test_put_get_ranged_get_list_delete(s3_server: S3Server, s3_bucket: str) -> None:
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    assert client.bucket_exists(s3_bucket)
    blob = os.urandom(3 * 1024 * 1024 + 17)
    _put(client, s3_bucket, "vm-1/disk-0/chunk-000", blob)
    _put(client, s3_bucket, "vm-1/disk-0/chunk-001", b"second")
    _put(client, s3_bucket, "vm-2/manifest.json", b"{}")

    assert _get(client, s3_bucket, "vm-1/disk-0/chunk-000") == blob
    assert (
        _get(client, s3_bucket, "vm-1/disk-0/chunk-000", offset=1_000_000, length=4096)
        == (blob[1_000_000 : 1_000_000 + 4096])
    )
    stat = client.stat_object(s3_bucket, "vm-1/disk-0/chunk-000")
    assert stat.size == len(blob)

    listed = sorted(o.object_name or "" for o in client.list_objects(s3_bucket, recursive=True))
    assert listed == ["vm-1/disk-0/chunk-000", "vm-1/disk-0/chunk-001", "vm-2/manifest.json"]
    under = [o.object_name for o in client.list_objects(s3_bucket, prefix="vm-1/disk-0/")]
    assert under == ["vm-1/disk-0/chunk-000", "vm-1/disk-0/chunk-001"]

    client.remove_object(s3_bucket, "vm-1/disk-0/chunk-001")
    with pytest.raises(S3Error) as info:
        client.stat_object(s3_bucket, "vm-1/disk-0/chunk-001")
    assert info.value.code == "NoSuchKey"
    listed = sorted(o.object_name or "" for o in client.list_objects(s3_bucket, recursive=True))
    assert listed == ["vm-1/disk-0/chunk-000", "vm-2/manifest.json"]


def test_each_test_gets_a_fresh_bucket(s3_client: Minio, s3_bucket: str) -> None:
    assert s3_bucket.startswith("vbm-test-")
    assert list(s3_client.list_objects(s3_bucket, recursive=True)) == []


@pytest.mark.parametrize(
    ("access", "secret", "code"),
    [
        ("wrong-key", None, "InvalidAccessKeyId"),
        (None, "wrong-secret", "SignatureDoesNotMatch"),
    ],
)
def test_wrong_credentials_are_refused(
    s3_server: S3Server, s3_bucket: str, access: str | None, secret: str | None, code: str
) -> None:
    bad = s3_server.client(access_key=access, secret_key=secret)
    with pytest.raises(S3Error) as info:
        bad.list_buckets()
    assert info.value.code == code
    with pytest.raises(S3Error):
        _put(bad, s3_bucket, "intruder", b"x")
    good = s3_server.client()
    assert list(good.list_objects(s3_bucket)) == []


def test_anonymous_access_is_refused(s3_server: S3Server, s3_bucket: str) -> None:
    anonymous = Minio(s3_server.endpoint, secure=False)
    with pytest.raises(S3Error) as info:
        list(anonymous.list_objects(s3_bucket))
    assert info.value.code == "AccessDenied"


@pytest.mark.slow
def test_private_server_survives_kill_9_and_restart(private_s3_server: S3Server) -> None:
    client = private_s3_server.client()
    client.make_bucket("crash-test")
    _put(client, "crash-test", "kept", b"durable bytes")
    old_pid = private_s3_server.pid
    private_s3_server.kill()
    assert not private_s3_server.alive
    private_s3_server.start()
    assert private_s3_server.pid != old_pid
    assert _get(private_s3_server.client(), "crash-test", "kept") == b"durable bytes"
