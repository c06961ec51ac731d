"""The secret box: secrets vbm stores (vCenter passwords, ...) are encrypted with Fernet.

The key comes from `VBM_SECRET_KEY` (one or more Fernet keys, comma-separated: the first
encrypts, all decrypt) or else from the key file `<data_dir>/secret.key`, made with mode 0600 on
first use. While `vbm secrets rotate` runs, `secret.key.new` decrypts too (the values it has
re-encrypted are readable before the new key takes the old one's place).

A value that cannot be decrypted raises `VaultError`, naming what it was and what to do: a
service treats it as a permanent failure of what needed it, never as a reason to stop.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.errors import StoreError
from shared.settings import Settings

R = TypeVar("R")
T = TypeVar("T")

KEY_FILE = "secret.key"
NEW_SUFFIX = ".new"
ENV = "VBM_SECRET_KEY"


class VaultError(StoreError):
    """A secret cannot be decrypted, or the key cannot be read; the message says which and how
    to fix it (never the secret)."""

    status, title = 503, "Service Unavailable"


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


@dataclass(frozen=True)
class Vault:
    """Encrypts with the first key, decrypts with any. `source` says where the keys came from."""

    keys: tuple[bytes, ...]
    source: str  # "VBM_SECRET_KEY" or the key file's path
    from_env: bool

    @property
    def _box(self) -> MultiFernet:
        return MultiFernet([Fernet(k) for k in self.keys])

    def encrypt(self, text: str) -> str:
        return self._box.encrypt(text.encode()).decode("ascii")

    def decrypt(self, token: str, what: str) -> str:
        """The plain text of `token`; VaultError naming `what` (e.g. "the password of vCenter
        'vc2'") when no configured key opens it."""
        try:
            return self._box.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError, ValueError):
            if self.from_env:
                fix = f"set {ENV} to the key it was written with (first, or among the keys)"
            else:
                fix = f"restore {self.source} (the key it was written with) or set {ENV} to that key"
            raise VaultError(f"{what} cannot be decrypted with the configured secret key: {fix}") from None


def parse_keys(text: str, where: str) -> tuple[bytes, ...]:
    keys = tuple(k.strip().encode("ascii") for k in text.split(",") if k.strip())
    if not keys:
        raise VaultError(f"{where} holds no key")
    for i, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            raise VaultError(
                f"{where}: key {i} is not a Fernet key (32 url-safe base64-encoded bytes;"
                " make one with `vbm secrets rotate` or Fernet.generate_key())"
            ) from None
    return keys


def load(settings: Settings, *, create: bool = True) -> Vault:
    """The configured keys: `VBM_SECRET_KEY`, else the key file (made when missing and `create`)."""
    if settings.secret_key is not None:
        return Vault(parse_keys(settings.secret_key.get_secret_value(), ENV), ENV, from_env=True)
    path = key_path(settings.data_dir)
    try:
        if not path.exists():
            if not create:
                raise VaultError(f"there is no secret key: {path} does not exist and {ENV} is not set")
            write_key(path, Fernet.generate_key())
        keys = read_key(path)
    except OSError as exc:
        raise VaultError(
            f"the secret key file {path} cannot be made or read: {exc.strerror or exc}"
        ) from None
    pending = path.with_name(path.name + NEW_SUFFIX)
    if pending.exists():  # a rotation is under way: what it re-encrypted must stay readable
        with contextlib.suppress(VaultError, OSError):
            keys = (*keys, *read_key(pending))
    return Vault(keys, str(path), from_env=False)


def read_key(path: Path) -> tuple[bytes, ...]:
    """The keys of a key file, refused when group or others may read it."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultError(
            f"the secret key file {path} may be read by others (mode {stat.S_IMODE(mode):04o}):"
            f" run `chmod 600 {path}` (and ask who has read it)"
        )
    return parse_keys(path.read_text(), str(path))


def write_key(path: Path, key: bytes, *, replace: bool = False) -> None:
    """Write a key file with mode 0600, whole or not at all. Without `replace`, a key file that
    appeared meanwhile (another process made it first) is kept and this key dropped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic, and fails when the file exists
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def decrypt_each(
    rows: Sequence[R], settings: Settings, convert: Callable[[R, Vault], T], name: Callable[[R], str]
) -> tuple[list[T], dict[str, VaultError]]:
    """`convert(row, vault)` for every row: the converted ones, and apart, by `name(row)`, those
    whose secret cannot be decrypted (all of them when the key itself cannot be read)."""
    if not rows:
        return [], {}
    try:
        vault = load(settings)
    except VaultError as exc:
        return [], {name(r): exc for r in rows}
    done: list[T] = []
    broken: dict[str, VaultError] = {}
    for row in rows:
        try:
            done.append(convert(row, vault))
        except VaultError as exc:
            broken[name(row)] = exc
    return done, broken
