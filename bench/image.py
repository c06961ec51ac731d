"""The benchmark's disk image: deterministic, seeded, made of 64 KiB segments.

Each segment is, drawn from the seed: random bytes (50%), zeros (30%) or text-like lines of
words (20%). The incremental's changes are drawn from the seed too: 5% of the 4 MiB windows each
get 1 MiB of new (random) data at a 4 KiB-aligned offset inside the window.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

SEGMENT = 64 * 1024
WINDOW = 4 * 1024 * 1024
CHANGE = 1024 * 1024
CHANGE_ALIGN = 4096
CHANGED_FRACTION = 0.05

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Change:
    offset: int
    data: bytes


@dataclass(frozen=True)
class Composition:
    random: int = 0
    zero: int = 0
    text: int = 0


def _vocabulary(rng: random.Random, words: int = 4096) -> list[str]:
    """Words with their separator: mostly a space, sometimes a line end."""
    out = []
    for _ in range(words):
        word = "".join(rng.choices(_LETTERS, k=rng.randint(2, 11)))
        out.append(word + ("\n" if rng.random() < 0.12 else " "))
    return out


def _text_segment(rng: random.Random, vocab: list[str]) -> bytes:
    parts: list[bytes] = []
    have = 0
    while have < SEGMENT:
        piece = "".join(rng.choices(vocab, k=(SEGMENT - have) // 6 + 64)).encode()
        parts.append(piece)
        have += len(piece)
    return b"".join(parts)[:SEGMENT]


def write_image(path: Path, size: int, seed: int) -> tuple[str, Composition]:
    """Write the image (zero segments as holes) and return its SHA-256 and its composition."""
    if size <= 0 or size % SEGMENT:
        raise ValueError(f"image size {size} must be a positive multiple of 64 KiB")
    rng = random.Random(seed)
    vocab = _vocabulary(random.Random(seed ^ 0x5EED))
    digest = hashlib.sha256()
    zero = bytes(SEGMENT)
    counts = {"random": 0, "zero": 0, "text": 0}
    with open(path, "wb") as fh:
        for _ in range(size // SEGMENT):
            kind = rng.random()
            if kind < 0.5:
                data = rng.randbytes(SEGMENT)
                counts["random"] += 1
            elif kind < 0.8:
                counts["zero"] += 1
                fh.seek(SEGMENT, os.SEEK_CUR)
                digest.update(zero)
                continue
            else:
                data = _text_segment(rng, vocab)
                counts["text"] += 1
            fh.write(data)
            digest.update(data)
        fh.truncate(size)
    return digest.hexdigest(), Composition(**counts)


def changes(size: int, seed: int) -> list[Change]:
    """The incremental's guest writes: 1 MiB of new data in 5% of the 4 MiB windows."""
    rng = random.Random(seed * 1_000_003 + 17)
    windows = size // WINDOW  # whole windows only
    if windows == 0:
        raise ValueError("the image must hold at least one 4 MiB window")
    count = max(1, round(windows * CHANGED_FRACTION))
    chosen = sorted(rng.sample(range(windows), count))
    slots = (WINDOW - CHANGE) // CHANGE_ALIGN + 1
    return [Change(w * WINDOW + rng.randrange(slots) * CHANGE_ALIGN, rng.randbytes(CHANGE)) for w in chosen]


def apply_changes(path: Path, todo: list[Change]) -> None:
    with open(path, "r+b") as fh:
        for change in todo:
            fh.seek(change.offset)
            fh.write(change.data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
