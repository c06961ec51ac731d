"""Browser sessions and the one-time setup token (docs/design.md, "Access").

A session's cookie holds a random token; the table holds its SHA-256 only, so a copy of the
database logs nobody in. A session ends after `session_idle_minutes` without a request, after
`session_max_hours` whatever happens, at logout, and when its user is disabled or changes their
password. Each session has its own CSRF token: a state-changing request that the cookie
authenticates must repeat it in the `X-CSRF-Token` header.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from shared.clock import utcnow
from shared.db.users import SetupToken, User, WebSession
from shared.model.access import Role
from shared.settings_access import SecuritySettings

COOKIE = "vbm_session"
CSRF_HEADER = "X-CSRF-Token"
TOUCH_EVERY = timedelta(seconds=60)
SETUP_LIFE = timedelta(hours=24)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionInfo:
    id: str
    user: str
    role: Role
    csrf_token: str
    expires_at: datetime
    idle_expires_at: datetime
    last_seen_at: datetime


def start(
    session: Session, user: str, now: datetime, rules: SecuritySettings, source: str
) -> tuple[str, SessionInfo]:
    """A new session for `user`: (the cookie's token, shown once, the session). Sessions long
    over are forgotten on the way (a login is rare enough to carry that delete)."""
    sweep(session, now, rules)
    token = secrets.token_urlsafe(32)
    row = WebSession(
        id=_digest(token),
        user=user,
        csrf_token=secrets.token_urlsafe(24),
        source=source[:255],
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=rules.session_max_hours),
    )
    session.add(row)
    session.flush()
    role = Role(session.get(User, user).role)  # type: ignore[union-attr]
    return token, _info(row, role, rules)


def _info(row: WebSession, role: Role, rules: SecuritySettings) -> SessionInfo:
    idle = row.last_seen_at + timedelta(minutes=rules.session_idle_minutes)
    return SessionInfo(
        row.id, row.user, role, row.csrf_token, row.expires_at, min(idle, row.expires_at), row.last_seen_at
    )


def lookup(
    session: Session, token: str | None, now: datetime, rules: SecuritySettings
) -> tuple[SessionInfo | None, str]:
    """(the live session of a cookie's token, "") or (None, why it is not one)."""
    if not token or len(token) > 256:
        return None, "no session"
    row = session.get(WebSession, _digest(token))
    if row is None:
        return None, "unknown session: log in again"
    user = session.get(User, row.user)
    if row.ended_at is not None:
        return None, "the session ended: log in again"
    if user is None or not user.enabled:
        return None, "the account is disabled"
    found = _info(row, Role(user.role), rules)
    if now >= found.expires_at:
        return None, "the session reached its time limit: log in again"
    if now >= found.idle_expires_at:
        return None, "the session expired after being idle: log in again"
    return found, ""


def csrf_ok(found: SessionInfo, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(found.csrf_token.encode(), presented.encode())


def needs_touch(found: SessionInfo, now: datetime) -> bool:
    return now - found.last_seen_at >= TOUCH_EVERY


def touch(session: Session, session_id: str, now: datetime) -> None:
    row = session.get(WebSession, session_id)
    if row is not None and row.ended_at is None and row.last_seen_at < now:
        row.last_seen_at = now


def end(session: Session, session_id: str, now: datetime) -> None:
    row = session.get(WebSession, session_id)
    if row is not None and row.ended_at is None:
        row.ended_at = now


def sweep(session: Session, now: datetime, rules: SecuritySettings) -> int:
    """Forget sessions that ended or expired over a day ago."""
    old = now - timedelta(days=1)
    result = session.execute(
        delete(WebSession).where(
            or_(
                WebSession.ended_at < old,
                WebSession.expires_at < old,
                WebSession.last_seen_at < old - timedelta(minutes=rules.session_idle_minutes),
            )
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def new_setup_token(session: Session, now: datetime) -> str:
    """A fresh one-time token that lets the first admin be made (replacing any earlier one)."""
    token = secrets.token_urlsafe(24)
    session.execute(delete(SetupToken))
    session.add(SetupToken(token_sha256=_digest(token), created_at=now, expires_at=now + SETUP_LIFE))
    return token


def use_setup_token(session: Session, token: str, now: datetime) -> bool:
    """Whether `token` is the live setup token; it is used up when it is."""
    row = session.scalar(select(SetupToken))
    if row is None or row.expires_at <= now:
        return False
    if not hmac.compare_digest(row.token_sha256, _digest(token)):
        return False
    session.delete(row)
    return True


def first_admin_token(db_url: str) -> str | None:
    """A fresh one-time setup token while the database holds no user, else None (never a
    default password: the first admin chooses theirs)."""
    from shared.catalog import users
    from shared.db import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            return None if users.any_exist(s) else new_setup_token(s, utcnow())
    except Exception as exc:  # the status lines must come out whatever the database says
        logging.getLogger(__name__).warning("could not make a setup token: %s", exc)
        return None
    finally:
        engine.dispose()


def first_admin_lines(db_url: str, gateway_url: str) -> list[str]:
    """What `vbm up` prints while no user exists: a fresh setup token and how to spend it."""
    token = first_admin_token(db_url)
    if token is None:
        return []
    trust = " --cacert <the certificate above>" if gateway_url.startswith("https:") else ""
    return [
        "  No user exists yet. Make the first admin (this token works once, for 24 h):",
        f"    open {gateway_url}/setup and enter the setup token: {token}",
        f"    or: curl{trust} -X POST {gateway_url}/api/v1/setup -H 'Content-Type: application/json'"
        f""" -d '{{"token": "{token}", "name": "admin", "password": "..."}}'""",
        "    or: vbm user add NAME --role admin",
    ]
