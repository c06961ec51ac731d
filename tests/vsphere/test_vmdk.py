"""The streamOptimized writer: exact size, and a stream any reader of the format decodes back."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import AsyncIterator

import pytest

from shared.vsphere.vmdk import GRAIN, SECTOR, StreamOptimized, grain_runs, grains_with_data

MIB = 1 << 20


def decode(stream: bytes) -> tuple[bytes, dict[int, int]]:
    """A reader written from the format's description: follows the markers, and checks the
    grain directory and tables (from the footer) against where the grains really are."""
    magic, version, flags, capacity, grain, desc_off, desc_n, gtes, _, gd_off, overhead = struct.unpack_from(
        "<IIIQQQQIQQQ", stream
    )
    assert (magic, version, flags, grain, desc_off, gtes) == (0x564D444B, 3, 0x30001, 128, 1, 512)
    assert gd_off == 0xFFFFFFFFFFFFFFFF
    assert b'createType="streamOptimized"' in stream[SECTOR : SECTOR * (1 + desc_n)]
    disk = bytearray(capacity * SECTOR)
    where: dict[int, int] = {}  # grain -> sector of its marker
    at = overhead * SECTOR
    footer_gd = None
    while True:
        value, size = struct.unpack_from("<QI", stream, at)
        if size:
            data = zlib.decompress(stream[at + 12 : at + 12 + size])
            assert len(data) == GRAIN
            offset = value * SECTOR
            disk[offset : offset + GRAIN] = data[: max(0, len(disk) - offset)]
            where[value // 128] = at // SECTOR
            at += -(-(12 + size) // SECTOR) * SECTOR
            continue
        (kind,) = struct.unpack_from("<I", stream, at + 12)
        if kind == 0:
            assert value == 0
            at += SECTOR
            break
        if kind == 3:
            footer_gd = struct.unpack_from("<Q", stream, at + SECTOR + 56)[0]
        at += SECTOR + value * SECTOR
    assert at == len(stream)
    assert footer_gd is not None
    tables = -(-capacity // (128 * 512))
    gd = struct.unpack_from(f"<{tables}I", stream, footer_gd * SECTOR)
    seen = {}
    for t, gt_sector in enumerate(gd):
        if gt_sector == 0:
            continue
        for i, g in enumerate(struct.unpack_from("<512I", stream, gt_sector * SECTOR)):
            if g:
                seen[t * 512 + i] = g
    assert seen == where
    return bytes(disk), where


async def feed(disk: bytes, grains: list[int]) -> AsyncIterator[tuple[int, bytes]]:
    for g in grains:
        yield g, disk[g * GRAIN : (g + 1) * GRAIN]


async def collect(s: StreamOptimized, disk: bytes) -> bytes:
    return b"".join([piece async for piece in s.stream(feed(disk, s.grains))])


@pytest.mark.parametrize("capacity", [40 * MIB, 5 * MIB + 3072, 64 * MIB + 512])
async def test_stream_is_exactly_its_size_and_decodes_to_the_disk(capacity: int) -> None:
    disk = bytearray(capacity)
    windows = []
    for index, offset in enumerate(range(0, capacity, 4 * MIB)):
        length = min(4 * MIB, capacity - offset)
        if index % 3 == 1:  # every third window is zeros
            windows.append((offset, length, None))
        else:
            disk[offset : offset + length] = os.urandom(length)
            windows.append((offset, length, f"chunk{index}"))
    grains = grains_with_data(capacity, windows)
    s = StreamOptimized(capacity, grains)
    stream = await collect(s, bytes(disk))
    assert len(stream) == s.size
    decoded, where = decode(stream)
    assert decoded == disk
    assert sorted(where) == grains
    sent = len(grains) * GRAIN
    assert sent < capacity  # the zero windows are not sent


def test_grains_cover_windows_that_are_not_grain_aligned() -> None:
    windows = [(0, 12288, None), (12288, 12288, "a"), (24576, 200000, None), (224576, 4096, "b")]
    assert grains_with_data(228672, windows) == [0, 3]
    assert list(grain_runs([0, 1, 2, 5, 6, 9])) == [(0, 3), (5, 7), (9, 10)]
    assert grains_with_data(MIB, [(0, MIB, None)]) == []


async def test_an_empty_disk_is_a_valid_stream_with_no_grains() -> None:
    s = StreamOptimized(8 * MIB, [])
    stream = await collect(s, bytes(8 * MIB))
    assert len(stream) == s.size
    assert decode(stream)[0] == bytes(8 * MIB)


async def test_a_source_that_skips_a_grain_is_refused() -> None:
    s = StreamOptimized(4 * MIB, [0, 1, 2])
    with pytest.raises(ValueError, match="not expected"):
        [x async for x in s.stream(feed(bytes(4 * MIB), [0, 2]))]
    with pytest.raises(ValueError, match="ended before"):
        [x async for x in s.stream(feed(bytes(4 * MIB), [0, 1]))]
    with pytest.raises(ValueError, match="a disk's capacity"):
        StreamOptimized(1000, [])
