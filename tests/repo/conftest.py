"""Helpers for repository tests: images made of random, text-like and zero segments."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.repo import LocalBackend, Repository, Writer

SEG = 64 * 1024


def make_image(size: int, seed: int) -> bytes:
    """Deterministic disk content: 50% random, 30% zero, 20% text-like 64 KiB segments."""
    rng = random.Random(seed)
    out = bytearray()
    text = b"The quick brown fox jumps over the lazy dog. " * 2000
    while len(out) < size:
        kind = rng.random()
        n = min(SEG, size - len(out))
        if kind < 0.5:
            out += rng.randbytes(n)
        elif kind < 0.8:
            out += bytes(n)
        else:
            start = rng.randrange(0, 1000)
            out += text[start : start + n]
    return bytes(out)


class BytesSource:
    """A disk served from memory (tests only; the product streams)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    async def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        await asyncio.sleep(0)
        return self.data[offset : offset + length]


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def read(self, offset: int, length: int) -> bytes:
        def pread() -> bytes:
            with open(self.path, "rb") as fh:
                return os.pread(fh.fileno(), length, offset)

        return await asyncio.to_thread(pread)


@pytest.fixture
async def repo(tmp_path: Path) -> Repository:
    return await Repository.init(LocalBackend(tmp_path / "repo"), chunk_size=64 * 1024)


@pytest.fixture
async def writer(repo: Repository) -> AsyncIterator[Writer]:
    w = Writer(repo, workers=3)
    yield w
    w.close()


async def read_all(repo: Repository, rp_id: str, disk: int = 0) -> bytes:
    from shared.repo import read_disk

    rp = await repo.load(rp_id)
    return b"".join([piece async for piece in read_disk(repo, rp, rp.disk(disk))])
