"""What the database holds encrypted (one line per kind of secret), and `vbm secrets rotate`.

Rotation: a new key is written as `secret.key.new` (readers take it as a second key from then
on), every encrypted value is re-encrypted under it in one transaction, then it atomically takes
the place of `secret.key`; the old key stays as `secret.key.old-<timestamp>` until the user
deletes it. With `VBM_SECRET_KEY` set, the keys live in the environment: the values are
re-encrypted under a new key that is returned, to be put first in `VBM_SECRET_KEY`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, Select, select, update
from sqlalchemy.orm import Session

from shared.db.models import Base
from shared.settings import Settings
from shared.vault import NEW_SUFFIX, Vault, VaultError, key_path, load, write_key


@dataclass(frozen=True)
class Encrypted:
    """A column holding Fernet tokens; `what` names one value in errors, e.g. `the password of
    vCenter {key}` (`{key}` is the row's primary key)."""

    table: str
    column: str
    what: str


ENCRYPTED: tuple[Encrypted, ...] = (
    Encrypted("vcenters", "password", "the password of vCenter {key!r}"),
    Encrypted("locations", "secrets", "the credentials of repository location {key!r}"),
    Encrypted("smtp", "password", "the SMTP password"),
    Encrypted("mounts", "secrets", "the password of mount {key!r}"),
    Encrypted("channels", "url", "the URL of notification channel {key!r}"),
    Encrypted("channels", "secret", "the HMAC key of notification channel {key!r}"),
    Encrypted("channels", "token", "the bot token of notification channel {key!r}"),
)


@dataclass(frozen=True)
class Rotated:
    values: int  # how many values were re-encrypted
    key_file: Path | None  # the new key file (None: VBM_SECRET_KEY)
    old_key_file: Path | None  # where the previous key was kept
    new_key: str | None  # only with VBM_SECRET_KEY: the key to put first in it


def reencrypt(engine: Engine, old: Vault, new: Vault) -> int:
    """Every registered value decrypted with `old` and encrypted with `new`, in one transaction
    (nothing changes when one cannot be decrypted: VaultError naming it)."""
    count = 0
    with engine.begin() as conn:
        for spec in ENCRYPTED:
            table = Base.metadata.tables[spec.table]
            [key] = table.primary_key.columns
            column = table.c[spec.column]
            rows = conn.execute(select(key, column).where(column.is_not(None)).with_for_update()).all()
            for pk, token in rows:
                plain = old.decrypt(token, spec.what.format(key=pk))
                conn.execute(update(table).where(key == pk).values({spec.column: new.encrypt(plain)}))
                count += 1
    return count


def rotate(engine: Engine, settings: Settings, now: datetime) -> Rotated:
    """Re-encrypt every stored secret under a new key (see the module's docstring)."""
    fresh = Fernet.generate_key()
    if settings.secret_key is not None:
        old = load(settings)
        count = reencrypt(engine, old, Vault((fresh, *old.keys), "the new key", from_env=True))
        return Rotated(count, None, None, fresh.decode("ascii"))
    path = key_path(settings.data_dir)
    if not path.exists():
        raise VaultError(
            f"there is no secret key to rotate: {path} does not exist (nothing is encrypted yet)"
        )
    pending = path.with_name(path.name + NEW_SUFFIX)
    write_key(pending, fresh, replace=True)
    old = load(settings, create=False)  # the current key, and the pending one
    new = Vault((fresh,), str(pending), from_env=False)
    try:
        count = reencrypt(engine, old, new)
    except BaseException:
        pending.unlink(missing_ok=True)  # nothing was re-encrypted: the current key stays
        raise
    kept = path.with_name(f"{path.name}.old-{now:%Y%m%dT%H%M%SZ}")
    os.link(path, kept)
    os.replace(pending, path)
    return Rotated(count, path, kept, None)


@dataclass(frozen=True)
class KeyStatus:
    """Which key each stored secret is encrypted under (read-only; the web UI's Security panel).
    A key is named by a fingerprint (the first 12 hex digits of its SHA-256), never shown."""

    source: str  # VBM_SECRET_KEY or the key file's path
    keys: tuple[str, ...] = ()  # fingerprints: the first encrypts, all decrypt
    by_key: dict[str, int] = field(default_factory=dict)  # stored values per key fingerprint
    unreadable: tuple[str, ...] = ()  # what each value no configured key opens is
    problem: str | None = None  # the key itself cannot be read

    @property
    def total(self) -> int:
        return sum(self.by_key.values()) + len(self.unreadable)


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def key_status(session: Session, settings: Settings) -> KeyStatus:
    """How many secrets are stored, under which key, and which no configured key opens."""
    stored = [
        (spec.what.format(key=pk), token)
        for spec in ENCRYPTED
        for pk, token in session.execute(_tokens(spec))
    ]
    try:
        vault = load(settings, create=False)
    except VaultError as exc:
        if not stored:  # nothing encrypted yet: the key is made on first use
            return KeyStatus(source=str(key_path(settings.data_dir)))
        return KeyStatus(
            str(key_path(settings.data_dir)), unreadable=tuple(w for w, _ in stored), problem=str(exc)
        )
    boxes = [(fingerprint(k), Fernet(k)) for k in vault.keys]
    by_key = {name: 0 for name, _ in boxes}
    unreadable: list[str] = []
    for what, token in stored:
        name = next((n for n, box in boxes if _opens(box, token)), None)
        if name is None:
            unreadable.append(what)
        else:
            by_key[name] += 1
    return KeyStatus(vault.source, tuple(by_key), by_key, tuple(unreadable))


def _tokens(spec: Encrypted) -> Select[tuple[Any, Any]]:
    table = Base.metadata.tables[spec.table]
    [key] = table.primary_key.columns
    column = table.c[spec.column]
    return select(key, column).where(column.is_not(None))


def _opens(box: Fernet, token: str) -> bool:
    try:
        box.decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError, ValueError):
        return False
    return True
