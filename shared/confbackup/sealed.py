"""The encrypted container of a configuration backup: a stream sealed with a passphrase.

Layout (all integers big-endian):

    MAGIC                      b"vbm-config-backup\\n"
    u32 header length, header  JSON: format, KDF (scrypt n, r, p, salt), cipher, chunk size,
                               nonce prefix, and `check` (SHA-256 of the second half of the KDF
                               output: tells a wrong passphrase from a damaged file)
    chunks                     u32 length, AES-256-GCM ciphertext and tag of up to `chunk` bytes

Each chunk's nonce is the 7-byte prefix, its 4-byte index and a last-chunk flag; its associated
data is the magic and the whole header. A changed byte anywhere, chunks reordered, dropped or
cut off after the last, or bytes after the last: each is an AuthenticationFailed, and the reader
says so before the caller has used anything (callers stage what they read and only apply it once
`finish()` has seen the authenticated last chunk).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"vbm-config-backup\n"
FORMAT = 1
CHUNK = 1024 * 1024
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MAX_SCRYPT_N = 2**20  # a header asking for more is refused (memory), not obeyed
MIN_PASSPHRASE = 12
_LEN = struct.Struct(">I")


class SealError(Exception):
    """The file cannot be opened: the message says why (never the passphrase)."""


class WrongPassphrase(SealError):
    pass


class AuthenticationFailed(SealError):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, str]:
    """(the AES key, the check value stored in the header)."""
    out = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode())
    return out[:32], hashlib.sha256(out[32:]).hexdigest()


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise SealError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")


class SealedWriter:
    """A write-only file object: what is written is encrypted chunk by chunk into `out`."""

    def __init__(self, out: BinaryIO, passphrase: str) -> None:
        check_passphrase(passphrase)
        salt, self._prefix = os.urandom(16), os.urandom(7)
        key, check = _derive(passphrase, salt, **SCRYPT)
        header = {
            "format": FORMAT,
            "kdf": {"name": "scrypt", **SCRYPT, "salt": _b64(salt)},
            "cipher": "AES-256-GCM",
            "chunk": CHUNK,
            "nonce_prefix": _b64(self._prefix),
            "check": check,
        }
        raw = json.dumps(header, sort_keys=True).encode()
        self._aad = MAGIC + raw
        self._aes = AESGCM(key)
        self._out = out
        self._buf = bytearray()
        self._index = 0
        out.write(MAGIC + _LEN.pack(len(raw)) + raw)

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > CHUNK:
            self._emit(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def _emit(self, plain: bytes, *, last: bool) -> None:
        nonce = self._prefix + struct.pack(">I", self._index) + (b"\x01" if last else b"\x00")
        sealed = self._aes.encrypt(nonce, plain, self._aad)
        self._out.write(_LEN.pack(len(sealed)) + sealed)
        self._index += 1

    def close(self) -> None:
        """Seal the last chunk (always one, maybe empty): a file cut short is then detectable."""
        self._emit(bytes(self._buf), last=True)
        self._buf.clear()
        self._out.flush()


class SealedReader:
    """A read-only file object over a sealed file; every chunk is authenticated before any of
    its bytes are returned."""

    def __init__(self, src: BinaryIO, passphrase: str) -> None:
        self._src = src
        if src.read(len(MAGIC)) != MAGIC:
            raise SealError("not a vbm configuration backup (the file does not start as one)")
        try:
            (size,) = _LEN.unpack(self._exact(4))
            if size > 64 * 1024:
                raise ValueError("header too long")
            raw = self._exact(size)
            header: dict[str, Any] = json.loads(raw)
            kdf = header["kdf"]
            n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
            salt = base64.b64decode(kdf["salt"])
            self._prefix = base64.b64decode(header["nonce_prefix"])
            self._chunk = int(header["chunk"])
            check = str(header["check"])
        except (ValueError, KeyError, TypeError, struct.error):
            raise AuthenticationFailed("the file is damaged: its header does not read") from None
        if header.get("format") != FORMAT:
            raise SealError(f"format {header.get('format')} is not one this vbm reads ({FORMAT})")
        if kdf.get("name") != "scrypt" or n > MAX_SCRYPT_N or r > 32 or p > 16 or len(self._prefix) != 7:
            raise AuthenticationFailed("the file is damaged: its header asks for an unknown or unsafe KDF")
        key, mine = _derive(passphrase, salt, n, r, p)
        if not hmac.compare_digest(mine, check):
            raise WrongPassphrase("wrong passphrase (or the file's header is damaged): nothing was restored")
        self._aad = MAGIC + raw
        self._aes = AESGCM(key)
        self._index = 0
        self._buf = b""
        self._done = False

    def _exact(self, size: int) -> bytes:
        data = self._src.read(size)
        if len(data) != size:
            raise AuthenticationFailed(
                f"the file is damaged: cut short at chunk {getattr(self, '_index', 0)}"
            )
        return data

    def _next(self) -> None:
        head = self._src.read(4)
        if not head:
            raise AuthenticationFailed(f"the file is damaged: cut short after chunk {self._index - 1}")
        if len(head) < 4:
            raise AuthenticationFailed(f"the file is damaged: cut short at chunk {self._index}")
        (size,) = _LEN.unpack(head)
        if size > self._chunk + 16:
            raise AuthenticationFailed(f"the file is damaged: chunk {self._index} has a wrong length")
        sealed = self._exact(size)
        for last in (b"\x00", b"\x01"):
            nonce = self._prefix + struct.pack(">I", self._index) + last
            try:
                self._buf = self._aes.decrypt(nonce, sealed, self._aad)
            except InvalidTag:
                continue
            self._done = last == b"\x01"
            self._index += 1
            return
        raise AuthenticationFailed(
            f"the file is damaged: chunk {self._index} fails authentication (a changed byte)"
        )

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        want = size if size >= 0 else None
        while want is None or want > 0:
            if not self._buf:
                if self._done:
                    break
                self._next()
                continue
            take = self._buf if want is None else self._buf[:want]
            self._buf = self._buf[len(take) :]
            parts.append(take)
            if want is not None:
                want -= len(take)
        return b"".join(parts)

    def finish(self) -> None:
        """Read to the authenticated last chunk and the end of the file: only then is every
        byte known to be what the writer wrote."""
        while not self._done:
            self._buf = b""
            self._next()
        if self._src.read(1):
            raise AuthenticationFailed("the file is damaged: bytes after its last chunk")
