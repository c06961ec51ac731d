"""Chunk objects: the bytes of one fixed window of a disk (or of a small file), framed.

A chunk is named by the BLAKE3 digest (256 bits) of its plain bytes (lower-case hex). Its stored
form is a 20-byte header followed by the payload:

    offset size field
    0      4    magic b"VBMC"
    4      1    format version, 1
    5      1    compression: 0 none, 1 zstd (one frame)
    6      2    flags, 0 (a reader refuses anything else)
    8      4    plain length, little-endian u32
    12     4    payload length, little-endian u32
    16     4    CRC-32 (zlib's) of bytes 0-15 and the payload, little-endian u32

The payload is stored uncompressed when zstd does not make it smaller. Encoding and decoding are
CPU work (zstandard and ISA-L release the GIL; BLAKE3 runs at ~7 GB/s), so callers run them in
threads.
"""

from __future__ import annotations

import functools
import struct
import threading
import zlib
from collections.abc import Callable

import zstandard
from blake3 import blake3

from shared.repo.errors import ChunkError

try:  # ISA-L's CRC-32 is zlib's CRC-32, about 6x faster (PCLMULQDQ); zlib's is the fallback
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - isal is a dependency; a platform without a wheel
    _crc32 = zlib.crc32

crc32: Callable[[bytes | memoryview, int], int] = _crc32


MAGIC = b"VBMC"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")
CRC = struct.Struct("<I")
FRAME = HEADER.size + CRC.size
NONE, ZSTD = 0, 1
ZSTD_LEVEL = 1
MAX_PLAIN = 64 * 1024 * 1024

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    comp: zstandard.ZstdCompressor | None = getattr(_local, "c", None)
    if comp is None:
        comp = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if dec is None:
        dec = _local.d = zstandard.ZstdDecompressor()
    return dec


def chunk_id(plain: bytes | memoryview) -> str:
    return blake3(plain).hexdigest()


@functools.lru_cache(maxsize=64)
def zero_id(length: int) -> str:
    """The id an all-zero window of `length` bytes would have (zero test, tree digest)."""
    return blake3(bytes(length)).hexdigest()


def id_or_zero(plain: bytes | memoryview) -> str | None:
    """The chunk id of `plain`, or None when it is all zeros (told by the id: no second pass)."""
    cid = chunk_id(plain)
    return None if cid == zero_id(len(plain)) else cid


def encode(plain: bytes | memoryview) -> bytes:
    if len(plain) > MAX_PLAIN:
        raise ValueError(f"chunk of {len(plain)} bytes is larger than {MAX_PLAIN}")
    packed = _compressor().compress(plain)
    if len(packed) < len(plain):
        return _frame(HEADER.pack(MAGIC, VERSION, ZSTD, 0, len(plain), len(packed)), packed)
    return _frame(HEADER.pack(MAGIC, VERSION, NONE, 0, len(plain), len(plain)), bytes(plain))


def _frame(header: bytes, payload: bytes) -> bytes:
    # The CRC covers the stored bytes, so a flip in a bit zstd would ignore is still seen.
    crc = crc32(payload, crc32(header, 0))
    return b"".join((header, CRC.pack(crc), payload))


def decode(stored: bytes, expected_id: str) -> bytes:
    """The plain bytes of a stored chunk; ChunkError if it is truncated, malformed or altered."""
    if len(stored) < FRAME:
        raise ChunkError(expected_id, f"is truncated ({len(stored)} bytes, no complete header)")
    magic, version, comp, flags, plain_len, payload_len = HEADER.unpack_from(stored)
    if magic != MAGIC:
        raise ChunkError(expected_id, "is not a vbm chunk (bad magic)")
    if version != VERSION:
        raise ChunkError(expected_id, f"has unknown chunk format version {version}")
    if len(stored) != FRAME + payload_len:
        raise ChunkError(expected_id, f"is truncated ({len(stored) - FRAME} of {payload_len} bytes)")
    if flags:
        raise ChunkError(expected_id, f"has unknown flags {flags:#x} (damaged header)")
    if comp not in (NONE, ZSTD):
        raise ChunkError(expected_id, f"has unknown compression {comp}")
    if plain_len > MAX_PLAIN or (comp == NONE and plain_len != payload_len):
        raise ChunkError(expected_id, f"has an impossible length {plain_len} (damaged header)")
    payload = memoryview(stored)[FRAME:]
    (crc,) = CRC.unpack_from(stored, HEADER.size)
    if crc32(payload, crc32(memoryview(stored)[: HEADER.size], 0)) != crc:
        raise ChunkError(expected_id, "is corrupt (its stored bytes fail their CRC-32)")
    if comp == ZSTD:
        try:
            if zstandard.frame_content_size(payload) != plain_len:
                raise ChunkError(expected_id, "has a zstd frame of the wrong size (damaged)")
            plain = _decompressor().decompress(payload, max_output_size=plain_len)
        except (zstandard.ZstdError, MemoryError) as exc:  # a damaged size field can ask for petabytes
            raise ChunkError(expected_id, f"does not decompress ({exc})") from None
    elif comp == NONE:
        plain = bytes(payload)
    else:
        raise ChunkError(expected_id, f"has unknown compression {comp}")
    if len(plain) != plain_len or chunk_id(plain) != expected_id:
        raise ChunkError(expected_id, "is corrupt (the BLAKE3 digest of its content does not match its name)")
    return plain
