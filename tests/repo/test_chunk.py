import os
import zlib

import pytest

from shared.repo import ChunkError
from shared.repo import chunk as c


@pytest.mark.parametrize(
    "plain",
    [b"", b"x", b"text " * 10_000, os.urandom(100_000), bytes(4096)],
    ids=["empty", "one", "text", "random", "zeros"],
)
def test_round_trip(plain: bytes) -> None:
    cid = c.chunk_id(plain)
    stored = c.encode(plain)
    assert c.decode(stored, cid) == plain


def test_compressible_is_compressed_and_random_is_stored_raw() -> None:
    text = b"abc" * 100_000
    assert c.HEADER.unpack_from(c.encode(text))[2] == c.ZSTD
    assert len(c.encode(text)) < len(text) // 10
    rnd = os.urandom(100_000)
    assert c.HEADER.unpack_from(c.encode(rnd))[2] == c.NONE
    assert len(c.encode(rnd)) == len(rnd) + c.FRAME


def test_zero_detection_by_id() -> None:
    assert c.id_or_zero(bytes(4 * 1024 * 1024)) is None
    assert c.id_or_zero(memoryview(bytearray(5 * 1024 * 1024))) is None
    almost = bytes(1000) + b"\x01"
    assert c.id_or_zero(almost) == c.chunk_id(almost)
    assert c.id_or_zero(b"") is None  # nothing is all zeros too


def test_crc_is_zlibs_crc32() -> None:
    data = os.urandom(100_003)
    assert c.crc32(data, c.crc32(b"head", 0)) == zlib.crc32(data, zlib.crc32(b"head"))


@pytest.mark.parametrize(
    "data",
    [b"text " * 1000, os.urandom(600), b"ab" * 20_000 + os.urandom(300)],
    ids=["zstd", "raw", "mixed"],
)
def test_every_single_bit_flip_is_detected(data: bytes) -> None:
    cid = c.chunk_id(data)
    stored = bytearray(c.encode(data))
    for pos in range(len(stored)):
        for bit in range(8):
            damaged = bytearray(stored)
            damaged[pos] ^= 1 << bit
            with pytest.raises(ChunkError, match=cid):
                c.decode(bytes(damaged), cid)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda s: s[:10], "truncated"),
        (lambda s: s[:-1], "truncated"),
        (lambda s: b"", "truncated"),
        (lambda s: b"XXXX" + s[4:], "bad magic"),
        (lambda s: s[:4] + b"\x09" + s[5:], "version 9"),
        (lambda s: s[:5] + b"\x07" + s[6:], "compression 7"),
    ],
)
def test_malformed_chunks_say_what_is_wrong(mutate, problem: str) -> None:  # type: ignore[no-untyped-def]
    data = b"hello " * 1000
    with pytest.raises(ChunkError, match=problem):
        c.decode(mutate(c.encode(data)), c.chunk_id(data))
