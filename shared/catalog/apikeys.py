"""API keys: what a REST client shows in `X-API-Key`.

A key reads `vbm_<id>_<secret>`. Only the SHA-256 of the secret is stored; the whole key is
shown once, when it is created (`vbm apikey create NAME`). Verification looks the row up by id
and compares digests in constant time; `last_used_at` is written at most once a minute per key
so a busy client does not turn every request into a database write.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from shared.db.models import ApiKey

PREFIX = "vbm"
HEADER = "X-API-Key"
TOUCH_EVERY = timedelta(seconds=60)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_KEY = re.compile(r"^vbm_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")
_NOBODY = "0" * 64  # compared against when the id is unknown, so timing does not tell


class ApiKeyError(Exception):
    """A key cannot be created or revoked; the message says why."""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.created_at, row.last_used_at, row.revoked_at)


def create(session: Session, name: str, now: datetime) -> tuple[KeyInfo, str]:
    """Add a key named `name`; returns it and the full key text (shown once, never stored)."""
    if not NAME_PATTERN.match(name):
        raise ApiKeyError(f"key name {name!r} must be 1-128 letters, digits, _ . @ - (starting alnum)")
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"an API key named {name!r} exists already (revoke it or pick another name)")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = ApiKey(id=key_id, name=name, secret_sha256=_digest(secret), created_at=now)
    session.add(row)
    session.flush()
    return _info(row), f"{PREFIX}_{key_id}_{secret}"


def verify(session: Session, presented: str | None) -> tuple[KeyInfo | None, str]:
    """Check a presented key (reads only): (the key, "") when good, else (None, why refused)."""
    if not presented:
        return None, f"missing {HEADER} header"
    match = _KEY.match(presented.strip())
    row = session.get(ApiKey, match.group(1)) if match else None
    wanted = row.secret_sha256 if row is not None else _NOBODY
    given = _digest(match.group(2)) if match else _digest(presented)
    if not hmac.compare_digest(wanted, given) or row is None:
        return None, f"invalid {HEADER}"
    if row.revoked_at is not None:
        return None, f"{HEADER} {row.name!r} was revoked"
    return _info(row), ""


def needs_touch(key: KeyInfo, now: datetime) -> bool:
    """Whether `last_used_at` is old enough to be written again (at most once a minute)."""
    last = key.last_used_at
    if last is None:
        return True
    if last.tzinfo is None:  # a naive timestamp from SQLite was written in UTC
        last = last.replace(tzinfo=UTC)
    return now - last >= TOUCH_EVERY


def touch(session: Session, key_id: str, now: datetime) -> None:
    """Record a use; conditional, so racing requests write once and never move it backwards."""
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - TOUCH_EVERY))
        .values(last_used_at=now)
    )


def list_keys(session: Session) -> list[KeyInfo]:
    return [_info(r) for r in session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))]


def revoke(session: Session, name: str, now: datetime) -> KeyInfo:
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise ApiKeyError(f"no API key named {name!r} (see `vbm apikey list`)")
    if row.revoked_at is None:
        row.revoked_at = now
    return _info(row)


def any_exist(session: Session) -> bool:
    """Whether any key was ever created (revoked ones count): then the API always needs one."""
    return bool(session.scalar(select(exists().where(ApiKey.id.is_not(None)))))
