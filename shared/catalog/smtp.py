"""The SMTP login as an object (REST API and `vbm smtp`): one stored mail server, its password
encrypted (shared/vault.py). A server configured in the settings (`VBM_NOTIFICATIONS__SMTP__HOST`
or the TOML file) takes precedence and is read-only here (`"source": "env"`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import SecretStr, ValidationError
from sqlalchemy.orm import Session

from shared.clock import iso
from shared.db.objects import SMTPRow
from shared.errors import Conflict, Invalid, NotFound
from shared.settings import Settings, SMTPSettings
from shared.vault import VaultError
from shared.vault import load as load_vault

ROW = 1
WHAT = "the SMTP password"
FIELDS = ("host", "port", "security", "username", "password", "sender", "ca_file")


def configured(settings: Settings) -> bool:
    return bool(settings.notifications.smtp.host)


def settings_of(row: SMTPRow, settings: Settings) -> SMTPSettings:
    """The stored server as settings, its password decrypted (VaultError naming it)."""
    password = load_vault(settings).decrypt(row.password, WHAT) if row.password else ""
    return SMTPSettings(
        host=row.host,
        port=row.port,
        security=row.security,
        username=row.username,
        password=SecretStr(password),
        sender=row.sender,
        ca_file=row.ca_file,
    )


def effective(session: Session, settings: Settings) -> SMTPSettings:
    """The configured server, else the stored one (when its password can be decrypted), else
    the (empty) configured one."""
    if configured(settings):
        return settings.notifications.smtp
    row = session.get(SMTPRow, ROW)
    if row is None:
        return settings.notifications.smtp
    try:
        return settings_of(row, settings)
    except VaultError:
        return settings.notifications.smtp


def _view(smtp: SMTPSettings, source: str) -> dict[str, Any]:
    return {
        "host": smtp.host,
        "port": smtp.port,
        "security": smtp.security,
        "username": smtp.username,
        "password": "set" if smtp.password.get_secret_value() else "not set",
        "sender": smtp.sender,
        "ca_file": smtp.ca_file,
        "source": source,
    }


def view(session: Session, settings: Settings) -> dict[str, Any]:
    """The server in effect, never its password; 404 when there is none."""
    if configured(settings):
        return _view(settings.notifications.smtp, "env") | {"updated_at": None}
    row = session.get(SMTPRow, ROW)
    if row is None:
        raise NotFound("no SMTP server: set one with PUT /api/v1/smtp (or VBM_NOTIFICATIONS__SMTP__HOST)")
    answer = {
        "host": row.host,
        "port": row.port,
        "security": row.security,
        "username": row.username,
        "password": "set" if row.password else "not set",
        "sender": row.sender,
        "ca_file": row.ca_file,
        "source": "api",
        "updated_at": iso(row.updated_at),
    }
    try:
        settings_of(row, settings)
    except VaultError as exc:
        answer["error"] = str(exc)
    return answer


def _refuse_configured(settings: Settings, doing: str) -> None:
    if configured(settings):
        raise Conflict(
            "the SMTP server is configured (VBM_NOTIFICATIONS__SMTP__* or the TOML file):"
            f" {doing} it there instead; the configuration takes precedence over the API"
        )


def candidate(session: Session, settings: Settings, body: Any) -> SMTPSettings:
    """What PUT would store: the body over what is stored (a password left out is kept)."""
    _refuse_configured(settings, "change")
    if not isinstance(body, dict):
        raise Invalid("(body)", f"must be a JSON object ({', '.join(FIELDS)})")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise Invalid(unknown[0], f"is not a field of the SMTP server ({', '.join(FIELDS)})")
    base: dict[str, Any] = {}
    row = session.get(SMTPRow, ROW)
    if row is not None:
        current = settings_of(row, settings)
        base = current.model_dump()
        base["password"] = current.password.get_secret_value()
    merged = {**base, **body}
    if not merged.get("host"):
        raise Invalid("host", "is required: the mail server's name or address")
    try:
        return SMTPSettings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Invalid(".".join(str(p) for p in err["loc"]) or "(body)", err["msg"]) from None


def save(session: Session, settings: Settings, smtp: SMTPSettings, now: datetime) -> dict[str, Any]:
    _refuse_configured(settings, "change")
    row = session.get(SMTPRow, ROW) or SMTPRow(id=ROW)
    password = smtp.password.get_secret_value()
    row.host, row.port, row.security, row.username = smtp.host, smtp.port, smtp.security, smtp.username
    row.password = load_vault(settings).encrypt(password) if password else None
    row.sender, row.ca_file, row.updated_at = smtp.sender, smtp.ca_file, now
    session.add(row)
    session.flush()
    return view(session, settings)


def clear(session: Session, settings: Settings) -> None:
    _refuse_configured(settings, "remove")
    row = session.get(SMTPRow, ROW)
    if row is None:
        raise NotFound("no SMTP server is stored")
    session.delete(row)
