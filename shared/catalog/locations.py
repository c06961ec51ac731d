"""Repository locations as objects (REST API and `vbm location`): a URL and the credentials it is
opened with, stored with the secret ones encrypted (shared/vault.py).

`credentials_for` gives the credentials a location is opened with: the settings' sections
(`VBM_S3__*`, `VBM_AZURE__*`, `VBM_SFTP__*`, `VBM_RCLONE__*`) for the configured repository
(`VBM_REPOSITORY`) when they hold credentials of its kind (the configuration takes precedence),
else those of the stored location that holds it (the longest URL it is at or under), else the
settings' sections. The configured repository is listed as `default` with `"source": "env"`,
read-only here. A stored location whose credentials cannot be decrypted fails alone: opening it
raises `Misconfigured` naming it, every other location opens as before.

Functions take an open session and leave committing to the caller; they raise `StoreError`s
naming the field at fault. No view, error or log line carries a secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import iso
from shared.db.models import Job
from shared.db.objects import LocationRow
from shared.errors import Conflict, Invalid, NotFound
from shared.repo.errors import Misconfigured
from shared.repo.locations import Credentials, check_location, config_env
from shared.settings import Settings
from shared.vault import VaultError
from shared.vault import load as load_vault

DEFAULT = "default"  # the configured repository's name in the API
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# per kind: the fields that are not secret, and the secret ones
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "local": ((), ()),
    "s3": (("access_key",), ("secret_key",)),
    "azure": ((), ("account_key",)),
    "sftp": (("known_hosts",), ("private_key", "password")),
    "rclone": ((), ("config",)),
}
ALL_FIELDS = sorted({f for plain, secret in KINDS.values() for f in plain + secret})


def kind_of(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else "local"
    return scheme if scheme in KINDS else "local"


def what(name: str) -> str:
    return f"the credentials of repository location {name!r}"


@dataclass(frozen=True)
class Location:
    """A location with its credentials in plain text (in memory only; repr never shows them)."""

    name: str
    url: str
    kind: str
    fields: dict[str, str]
    secrets: dict[str, str] = field(repr=False)

    def credentials(self) -> Credentials:
        f, s = self.fields, self.secrets
        return Credentials(
            s3_access_key=f.get("access_key", ""),
            s3_secret_key=SecretStr(s.get("secret_key", "")),
            azure_account_key=SecretStr(s.get("account_key", "")),
            sftp_password=SecretStr(s.get("password", "")),
            sftp_private_key=SecretStr(s.get("private_key", "")),
            sftp_known_hosts_text=f.get("known_hosts") or None,
            rclone_config_text=SecretStr(s.get("config", "")),
        )


def validated(body: Any, name: str | None = None) -> Location:
    """A body (POST, or PUT merged with what is stored) as a location: 422 naming the field."""
    if not isinstance(body, dict):
        raise Invalid("(body)", "must be a JSON object with name, url and the credentials of its kind")
    name = body.get("name") if name is None else name
    if not isinstance(name, str) or not NAME.match(name):
        raise Invalid("name", "is required: 1 to 64 letters, digits, '_', '.' or '-'")
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise Invalid("url", "is required: a path, s3://, azure://, sftp:// or rclone://")
    try:
        check_location(url)
    except ValueError as exc:
        raise Invalid("url", str(exc)) from None
    kind = kind_of(url)
    plain, secret = KINDS[kind]
    values: dict[str, str] = {}
    for key, value in body.items():
        if key in ("name", "url"):
            continue
        if key not in ALL_FIELDS:
            raise Invalid(key, f"is not a field of a location (name, url, {', '.join(ALL_FIELDS)})")
        if value is None:
            continue
        if key not in plain + secret:
            takes = ", ".join(plain + secret) or "no credentials"
            raise Invalid(key, f"is not used by {kind} locations (they take {takes})")
        if not isinstance(value, str):
            raise Invalid(key, "must be a string")
        values[key] = value
    _check_kind(kind, url, values)
    return Location(
        name,
        url,
        kind,
        {k: v for k, v in values.items() if k in plain},
        {k: v for k, v in values.items() if k in secret and v},
    )


def _check_kind(kind: str, url: str, values: dict[str, str]) -> None:
    def need(key: str, hint: str) -> None:
        if not values.get(key):
            raise Invalid(key, f"is required for {kind} locations ({hint})")

    if kind == "s3":
        need("access_key", "the access key id")
        need("secret_key", "the secret access key")
    elif kind == "azure":
        need("account_key", "the storage account key")
    elif kind == "sftp":
        if not values.get("private_key") and not values.get("password"):
            raise Invalid("password", "an sftp location needs a private_key or a password")
        _check_ssh(values)
    elif kind == "rclone":
        need("config", "the rclone config text holding the remote")
        try:
            env = config_env(values["config"])
        except ValueError as exc:
            raise Invalid("config", str(exc)) from None
        remote = urlsplit(url).netloc
        prefix = "RCLONE_CONFIG_" + re.sub(r"[^A-Z0-9]", "_", remote.upper()) + "_TYPE"
        if prefix not in env:
            raise Invalid("config", f"has no remote [{remote}] with a type (the location names it)")


def _check_ssh(values: dict[str, str]) -> None:
    import asyncssh  # only for sftp locations

    if values.get("private_key"):
        try:
            asyncssh.import_private_key(values["private_key"])
        except (asyncssh.KeyImportError, ValueError):
            raise Invalid("private_key", "is not an OpenSSH or PEM private key (no passphrase)") from None
    for i, line in enumerate((values.get("known_hosts") or "").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        parts = parts[1:] if parts[0].startswith("@") else parts  # @cert-authority, @revoked
        try:
            asyncssh.import_public_key(" ".join(parts[1:3]))
        except (asyncssh.KeyImportError, ValueError):
            raise Invalid(
                "known_hosts", f"line {i} is not `HOST KEYTYPE BASE64KEY` (ssh-keyscan HOST)"
            ) from None


def location_of(row: LocationRow, secrets: dict[str, str]) -> Location:
    return Location(row.name, row.url, row.kind, dict(row.fields or {}), secrets)


def decrypted(row: LocationRow, settings: Settings) -> Location:
    """The stored location with its secrets (VaultError naming it when they cannot be read)."""
    if not row.secrets:
        return location_of(row, {})
    plain = load_vault(settings).decrypt(row.secrets, what(row.name))
    return location_of(row, json.loads(plain))


def _base(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/")


def under(location: str, url: str) -> bool:
    """Whether `location` is `url` or a path below it (the query, e.g. ?tls=false, aside)."""
    loc, base = _base(location), _base(url)
    return loc == base or loc.startswith(base + "/")


def _env_has(settings: Settings, kind: str) -> bool:
    """Whether the settings' section of `kind` holds credentials."""
    if kind == "s3":
        return bool(settings.s3.access_key)
    if kind == "azure":
        return bool(settings.azure.account_key.get_secret_value())
    if kind == "sftp":
        return bool(settings.sftp.key_file or settings.sftp.password.get_secret_value())
    if kind == "rclone":
        return settings.rclone.config is not None
    return True


def holder(session: Session, location: str) -> LocationRow | None:
    """The stored location `location` is at or under (the longest URL wins)."""
    rows = [r for r in session.scalars(select(LocationRow)) if under(location, r.url)]
    return max(rows, key=lambda r: len(_base(r.url)), default=None)


def credentials_for(session: Session, settings: Settings, location: str) -> Credentials:
    """What `location` is opened with (see the module's docstring); Misconfigured naming the
    stored location whose credentials cannot be decrypted."""
    if under(location, settings.repository_location) and _env_has(settings, kind_of(location)):
        return Credentials.of(settings)
    row = holder(session, location)
    if row is None:
        return Credentials.of(settings)
    try:
        return decrypted(row, settings).credentials()
    except VaultError as exc:
        raise Misconfigured(f"repository {location}: {exc}") from None


def lookup(settings: Settings, sessions: sessionmaker[Session]) -> Callable[[str], Credentials]:
    """`credentials_for` reading the stored locations afresh on each call."""

    def find(location: str) -> Credentials:
        with sessions() as session:
            return credentials_for(session, settings, location)

    return find


def _masked(kind: str, fields: dict[str, Any], set_secrets: set[str]) -> dict[str, Any]:
    plain, secret = KINDS[kind]
    view: dict[str, Any] = {k: fields.get(k) for k in plain}
    view.update({k: "set" if k in set_secrets else "not set" for k in secret})
    return view


def configured_view(settings: Settings) -> dict[str, Any]:
    url = settings.repository_location
    kind = kind_of(url)
    s = settings
    fields = {"access_key": s.s3.access_key or None, "known_hosts": s.sftp.known_hosts}
    present = {
        "secret_key": bool(s.s3.secret_key.get_secret_value()),
        "account_key": bool(s.azure.account_key.get_secret_value()),
        "private_key": bool(s.sftp.key_file),
        "password": bool(s.sftp.password.get_secret_value()),
        "config": s.rclone.config is not None,
    }
    masked = _masked(kind, fields, {k for k, v in present.items() if v})
    view = {"name": DEFAULT, "url": url, "kind": kind, **masked, "source": "env"}
    return view | {"created_at": None, "updated_at": None}


def row_view(row: LocationRow, error: str | None = None, secrets: set[str] | None = None) -> dict[str, Any]:
    """A stored location; the secrets as "set" (`secrets`: their names, when known)."""
    present = secrets if secrets is not None else (set(KINDS[row.kind][1]) if row.secrets else set())
    view = {
        "name": row.name,
        "url": row.url,
        "kind": row.kind,
        **_masked(row.kind, row.fields or {}, present),
        "source": "api",
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
    if error:
        view["error"] = error
    return view


def _view(row: LocationRow, settings: Settings) -> dict[str, Any]:
    try:
        return row_view(row, secrets=set(decrypted(row, settings).secrets))
    except VaultError as exc:
        return row_view(row, str(exc))


SKIPPED = {"ok": None, "message": "saved untested (skip_test)"}


def open_test(url: str, failed: str | None) -> dict[str, Any]:
    """An open test's result in an answer (API and `vbm location add|edit --json`): `failed` is
    what shared.repo.locations.try_open said, None when it opened."""
    if failed is None:
        return {"ok": True, "message": f"{url} opens with these credentials"}
    return {"ok": False, "message": failed}


def list_views(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """The configured repository, then every stored location by name; never a secret."""
    rows = session.scalars(select(LocationRow).order_by(LocationRow.name))
    return [configured_view(settings)] + [_view(r, settings) for r in rows]


def get_view(session: Session, settings: Settings, name: str) -> dict[str, Any]:
    if name == DEFAULT:
        return configured_view(settings)
    return _view(_stored(session, name), settings)


def _stored(session: Session, name: str) -> LocationRow:
    row = session.get(LocationRow, name)
    if row is None:
        raise NotFound(f"no repository location {name!r} (see GET /api/v1/locations)")
    return row


def _refuse_default(name: str, doing: str) -> None:
    if name == DEFAULT:
        raise Conflict(
            f"location {DEFAULT!r} is the configured repository (VBM_REPOSITORY and the VBM_S3__,"
            f" VBM_AZURE__, VBM_SFTP__, VBM_RCLONE__ settings or the TOML file): {doing} it there"
            " instead; the configuration takes precedence over the API"
        )


def candidate_new(session: Session, settings: Settings, body: Any) -> Location:
    """What POST would add, checked: a valid body, a free name and a URL no other one has."""
    loc = validated(body)
    _refuse_default(loc.name, "change")
    if session.get(LocationRow, loc.name) is not None:
        raise Conflict(
            f"a location named {loc.name!r} exists: change it with PUT /api/v1/locations/{loc.name}"
        )
    _url_free(session, loc)
    return loc


def _url_free(session: Session, loc: Location) -> None:
    for row in session.scalars(select(LocationRow).where(LocationRow.name != loc.name)):
        if _base(row.url) == _base(loc.url):
            raise Conflict(f"url: location {row.name!r} has this URL already")


def candidate_change(session: Session, settings: Settings, name: str, body: Any) -> Location:
    """What PUT would make of the stored location `name`: fields left out stay as they are (a
    secret too); a changed URL of another kind needs its credentials given anew."""
    _refuse_default(name, "change")
    row = _stored(session, name)
    if not isinstance(body, dict):
        raise Invalid("(body)", "must be a JSON object of the fields to change")
    if "name" in body and body["name"] != name:
        raise Invalid("name", "cannot be changed (remove the location and add it under the new name)")
    merged: dict[str, Any] = {"url": row.url}
    if kind_of(str(body.get("url") or row.url)) == row.kind:
        merged.update(row.fields or {})
        merged.update(decrypted(row, settings).secrets if row.secrets else {})
    merged.update({k: v for k, v in body.items() if k != "name"})
    loc = validated(merged, name)
    _url_free(session, loc)
    return loc


def save(session: Session, settings: Settings, loc: Location, now: datetime) -> LocationRow:
    """Store `loc` (new or changed) with its secrets encrypted."""
    _refuse_default(loc.name, "change")
    row = session.get(LocationRow, loc.name)
    if row is None:
        row = LocationRow(name=loc.name, created_at=now)
    row.url, row.kind, row.fields = loc.url, loc.kind, dict(loc.fields)
    row.secrets = load_vault(settings).encrypt(json.dumps(loc.secrets)) if loc.secrets else None
    row.updated_at = now
    session.add(row)
    session.flush()
    return row


def jobs_using(session: Session, url: str) -> list[str]:
    """The jobs whose repository or secondary repositories are at or under `url`."""
    used = []
    for job in session.scalars(select(Job)):
        targets = [job.repository, *((job.options or {}).get("replicate_to") or [])]
        if any(isinstance(t, str) and under(t, url) for t in targets):
            used.append(job.name)
    return sorted(used)


def remove(session: Session, name: str) -> None:
    """Delete a stored location; 409 naming the jobs that use it."""
    _refuse_default(name, "remove")
    row = _stored(session, name)
    users = jobs_using(session, row.url)
    if users:
        raise Conflict(f"location {name!r} is used by job(s) {', '.join(users)}: change or delete them first")
    session.delete(row)
