"""Notification channels as objects (REST API and `vbm channel`), and the notification settings
in effect: the configured ones (`VBM_NOTIFICATIONS__*` or the TOML file) and those stored through
the API, whose URL (it may embed a token), HMAC key and bot token are encrypted (shared/vault.py).

A configured channel takes precedence over a stored one of the same name and is read-only here
(`"source": "env"`). A stored channel whose secrets cannot be decrypted is left out of
`effective` (its view names the error); the others work as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import smtp as smtpstore
from shared.clock import iso
from shared.db.models import Job
from shared.db.objects import ChannelRow
from shared.errors import Conflict, Invalid, NotFound
from shared.notify.channels import channel_view
from shared.settings import ChannelSettings, NotificationSettings, Settings
from shared.vault import Vault, VaultError, decrypt_each
from shared.vault import load as load_vault

FIELDS = ("type", "to", "url", "secret", "token", "chat_id", "api_url", "sendmail", "on", "level", "scope")
OPTIONS = ("chat_id", "api_url", "sendmail")  # the plain fields of a type, in the row's `options`
SECRETS = ("url", "secret", "token")


def url_of(name: str) -> str:
    return f"the URL of notification channel {name!r}"


def secret_of(name: str) -> str:
    return f"the HMAC key of notification channel {name!r}"


def token_of(name: str) -> str:
    return f"the bot token of notification channel {name!r}"


def settings_of(row: ChannelRow, vault: Vault) -> ChannelSettings:
    """The stored channel as settings, decrypted (VaultError naming what cannot be)."""
    url = vault.decrypt(row.url, url_of(row.name)) if row.url else ""
    secret = vault.decrypt(row.secret, secret_of(row.name)) if row.secret else ""
    token = vault.decrypt(row.token, token_of(row.name)) if row.token else ""
    options = {k: v for k, v in (row.options or {}).items() if k in OPTIONS}
    return ChannelSettings.model_validate(
        {
            "name": row.name,
            "type": row.type,
            "to": tuple(row.to or ()),
            "url": SecretStr(url),
            "secret": SecretStr(secret),
            "token": SecretStr(token),
            "on": tuple(row.on or ()),
            "level": row.level or "info",
            "scope": row.scope,
            **options,
        }
    )


def stored_rows(session: Session, settings: Settings) -> list[ChannelRow]:
    """The stored channels that no configured one of the same name hides."""
    configured = {c.name for c in settings.notifications.channels}
    rows = session.scalars(select(ChannelRow).order_by(ChannelRow.name))
    return [r for r in rows if r.name not in configured]


def usable(session: Session, settings: Settings) -> tuple[list[ChannelSettings], dict[str, VaultError]]:
    """Every channel, configured first; stored ones that cannot be decrypted apart, with the error."""
    done, broken = decrypt_each(stored_rows(session, settings), settings, settings_of, lambda r: r.name)
    return list(settings.notifications.channels) + done, broken


def effective(session: Session, settings: Settings) -> NotificationSettings:
    """The notification settings in effect: every usable channel and the SMTP server in effect."""
    found, _ = usable(session, settings)
    smtp = smtpstore.effective(session, settings)
    current = settings.notifications
    if len(found) == len(current.channels) and smtp is current.smtp:
        return current
    return current.model_copy(update={"channels": tuple(found), "smtp": smtp})


def notifications(settings: Settings, sessions: sessionmaker[Session]) -> NotificationSettings:
    with sessions() as session:
        return effective(session, settings)


def names(session: Session, settings: Settings) -> list[str]:
    """Every channel's name, configured or stored (readable or not)."""
    stored = [r.name for r in stored_rows(session, settings)]
    return [c.name for c in settings.notifications.channels] + stored


def _view(channel: ChannelSettings, settings: NotificationSettings, source: str) -> dict[str, Any]:
    view = channel_view(channel, settings)
    for name in SECRETS:
        view[name] = "set" if getattr(channel, name).get_secret_value() else "not set"
    view["source"] = source
    return view


def row_view(
    row: ChannelRow, notify: NotificationSettings, vault: Vault | None, problem: str | None
) -> dict[str, Any]:
    error = problem
    if vault is not None:
        try:
            view = _view(settings_of(row, vault), notify, "api")
        except VaultError as exc:
            error = str(exc)
    if error is not None:
        view = {
            "name": row.name,
            "type": row.type,
            "on": list(row.on or ()),
            "level": row.level or "info",
            "scope": row.scope,
            "to": list(row.to or ()),
            "url": "set" if row.url else "not set",
            "secret": "set" if row.secret else "not set",
            "token": "set" if row.token else "not set",
            "source": "api",
            "error": error,
        } | {k: v for k, v in (row.options or {}).items() if k in OPTIONS}
    view["created_at"], view["updated_at"] = iso(row.created_at), iso(row.updated_at)
    return view


def list_views(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Every channel, configured and stored, by name; never a URL's path or a key."""
    notify = effective(session, settings)
    never = {"created_at": None, "updated_at": None}
    views = [_view(c, notify, "env") | never for c in settings.notifications.channels]
    rows = stored_rows(session, settings)
    vault, problem = None, None
    if rows:
        try:
            vault = load_vault(settings)
        except VaultError as exc:
            problem = str(exc)
    views += [row_view(r, notify, vault, problem) for r in rows]
    return sorted(views, key=lambda v: v["name"])


def get_view(session: Session, settings: Settings, name: str) -> dict[str, Any]:
    for view in list_views(session, settings):
        if view["name"] == name:
            return view
    raise NotFound(f"no notification channel {name!r} (see GET /api/v1/channels)")


def _refuse_configured(settings: Settings, name: str, doing: str) -> None:
    if settings.notifications.channel(name) is not None:
        raise Conflict(
            f"notification channel {name!r} is configured (VBM_NOTIFICATIONS__CHANNELS or the TOML"
            f" file): {doing} it there instead; the configuration takes precedence over the API"
        )


def validated(body: Any) -> ChannelSettings:
    """A body as a channel: 422 naming the field that is wrong or missing."""
    if not isinstance(body, dict):
        raise Invalid("(body)", f"must be a JSON object with name and {', '.join(FIELDS)}")
    try:
        return ChannelSettings.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or _field_in(err["msg"])
        message = str(err["msg"]).removeprefix("Value error, ")
        raise Invalid(where, message) from None


def _field_in(message: str) -> str:
    """The field a whole-model check is about (ChannelSettings names it in backquotes)."""
    if "email address" in message:
        return "to"
    for name in ("to", "url", "token", "chat_id", "api_url", "sendmail"):
        if f"`{name}`" in message:
            return name
    return "(body)"


def candidate_new(session: Session, settings: Settings, body: Any) -> ChannelSettings:
    channel = validated(body)
    _refuse_configured(settings, channel.name, "change")
    if session.get(ChannelRow, channel.name) is not None:
        raise Conflict(
            f"a channel named {channel.name!r} exists: change it with PUT /api/v1/channels/{channel.name}"
        )
    return channel


def candidate_change(session: Session, settings: Settings, name: str, body: Any) -> ChannelSettings:
    """What PUT would make of stored channel `name` (fields left out, secrets too, unchanged)."""
    _refuse_configured(settings, name, "change")
    row = _stored(session, name)
    if not isinstance(body, dict):
        raise Invalid("(body)", f"must be a JSON object of the fields to change ({', '.join(FIELDS)})")
    if "name" in body and body["name"] != name:
        raise Invalid("name", "cannot be changed (remove the channel and add it under the new name)")
    current = settings_of(row, load_vault(settings))
    base = current.model_dump()
    for secret in SECRETS:
        base[secret] = getattr(current, secret).get_secret_value()
    return validated({**base, **{k: v for k, v in body.items() if k != "name"}})


def save(session: Session, settings: Settings, channel: ChannelSettings, now: datetime) -> ChannelRow:
    _refuse_configured(settings, channel.name, "change")
    row = session.get(ChannelRow, channel.name)
    if row is None:
        row = ChannelRow(name=channel.name, created_at=now)
    vault = load_vault(settings)
    row.type, row.to, row.on, row.scope = channel.type, list(channel.to), list(channel.on), channel.scope
    row.level = channel.level
    for name in SECRETS:  # a type's own secrets: one changed to another type leaves none behind
        plain = getattr(channel, name).get_secret_value() if _uses(channel.type, name) else ""
        setattr(row, name, vault.encrypt(plain) if plain else None)
    row.options = _options(channel)
    row.updated_at = now
    session.add(row)
    session.flush()
    return row


def _uses(kind: str, secret: str) -> bool:
    if secret == "token":
        return kind == "telegram"
    return kind not in ("telegram", "sendmail")  # url and secret, as before these types


def _options(channel: ChannelSettings) -> dict[str, str] | None:
    """The plain fields of the channel's type (the defaults of other types are not kept)."""
    if channel.type == "telegram":
        return {"chat_id": channel.chat_id, "api_url": channel.api_url}
    if channel.type == "sendmail":
        return {"sendmail": channel.sendmail}
    return None


def _stored(session: Session, name: str) -> ChannelRow:
    row = session.get(ChannelRow, name)
    if row is None:
        raise NotFound(f"no notification channel {name!r} (see GET /api/v1/channels)")
    return row


def jobs_using(session: Session, name: str) -> list[str]:
    """The jobs that name channel `name` (options.notify.channels)."""
    return sorted(
        job.name
        for job in session.scalars(select(Job))
        if name in (((job.options or {}).get("notify") or {}).get("channels") or ())
    )


def remove(session: Session, settings: Settings, name: str) -> None:
    """Delete a stored channel; 409 naming the jobs that name it."""
    _refuse_configured(settings, name, "remove")
    row = _stored(session, name)
    users = jobs_using(session, name)
    if users:
        raise Conflict(f"channel {name!r} is named by job(s) {', '.join(users)}: change or delete them first")
    session.delete(row)
