"""vCenters as objects (REST API and `vbm vcenter`): configured ones and those added through the API.

Configured vCenters (`VBM_VCENTERS` or the TOML file) keep working and take precedence: the API
shows them with `"source": "env"` and refuses to change or delete them. Those added through the
API live in the `vcenters` table with `source` "api", their password encrypted (shared/vault.py).
`settings_of` turns a stored row into the `VCenterSettings` the rest of vbm uses; `effective`
gives the settings with every usable stored vCenter added, for code written against settings.

Functions take an open session and leave committing to the caller; they raise `StoreError`s
naming the field at fault. No view, error or log line carries a password.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import iso
from shared.db.models import Job, VCenterRow
from shared.errors import Conflict, Invalid, NotFound
from shared.settings import Settings, VCenterSettings
from shared.vault import Vault, VaultError, decrypt_each
from shared.vault import load as load_vault

API, CONFIG = "api", "config"
FIELDS = ("url", "username", "password", "verify_tls", "ca_pem", "ca_file", "hotadd_proxy")


class VCenterChange(BaseModel):
    """A body of PUT: every field optional (the password too: unchanged when left out)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    username: str | None = Field(default=None, min_length=1, max_length=255)
    password: SecretStr | None = None
    verify_tls: bool | None = None
    ca_pem: str | None = None
    ca_file: str | None = None
    hotadd_proxy: str | None = None


def password_of(name: str) -> str:
    return f"the password of vCenter {name!r}"


def settings_of(row: VCenterRow, vault: Vault) -> VCenterSettings:
    """The stored vCenter as settings, its password decrypted (VaultError naming it when not)."""
    if row.password is None:
        raise VaultError(f"{password_of(row.name)} is not stored: set it again (vbm vcenter add, PUT)")
    return VCenterSettings(
        name=row.name,
        url=row.url,
        username=row.username,
        password=SecretStr(vault.decrypt(row.password, password_of(row.name))),
        verify_tls=row.verify_tls,
        ca_pem=row.ca_pem,
        ca_file=row.ca_file,
        hotadd_proxy=row.hotadd_proxy,
    )


def stored_rows(session: Session, settings: Settings) -> list[VCenterRow]:
    """The vCenters added through the API that no configured one of the same name hides."""
    configured = {vc.name for vc in settings.vcenters}
    rows = session.scalars(select(VCenterRow).where(VCenterRow.source == API).order_by(VCenterRow.name))
    return [r for r in rows if r.name not in configured]


def usable(session: Session, settings: Settings) -> tuple[list[VCenterSettings], dict[str, VaultError]]:
    """Every vCenter: configured ones first, then stored ones; those whose secret cannot be
    decrypted are left out and returned apart, each with its error."""
    done, broken = decrypt_each(stored_rows(session, settings), settings, settings_of, lambda r: r.name)
    return list(settings.vcenters) + done, broken


def find_usable(session: Session, settings: Settings, name: str) -> VCenterSettings:
    """One vCenter as it is configured or saved, to test it: NotFound, or the VaultError saying
    why its password cannot be decrypted."""
    known, broken = usable(session, settings)
    if name in broken:
        raise broken[name]
    found = next((vc for vc in known if vc.name == name), None)
    if found is None:
        raise NotFound(f"no vCenter {name!r} (see GET /api/v1/vcenters)")
    return found


def names(session: Session, settings: Settings) -> list[str]:
    """The name of every vCenter, configured or stored (readable or not)."""
    return [vc.name for vc in settings.vcenters] + [r.name for r in stored_rows(session, settings)]


def effective(session: Session, settings: Settings) -> Settings:
    """`settings` with every usable stored vCenter added (for code that reads settings.vcenters)."""
    found, _ = usable(session, settings)
    if len(found) == len(settings.vcenters):
        return settings
    return settings.model_copy(update={"vcenters": tuple(found)})


def loader(settings: Settings, sessions: sessionmaker[Session]) -> Callable[[str], VCenterSettings | None]:
    """For `VCenters` (shared/vsphere/pool.py): one stored vCenter by name, read afresh (None when
    there is none; VaultError when its password cannot be decrypted)."""

    def load(name: str) -> VCenterSettings | None:
        with sessions() as session:
            row = session.get(VCenterRow, name)
            if row is None or row.source != API:
                return None
            return settings_of(row, load_vault(settings))

    return load


def _config_view(vc: VCenterSettings) -> dict[str, Any]:
    return {
        "name": vc.name,
        "url": vc.url,
        "username": vc.username,
        "password": "set",
        "verify_tls": vc.verify_tls,
        "ca_pem": vc.ca_pem,
        "ca_file": vc.ca_file,
        "hotadd_proxy": vc.hotadd_proxy,
        "source": "env",
        "created_at": None,
        "updated_at": None,
    }


def row_view(row: VCenterRow, error: str | None = None) -> dict[str, Any]:
    view = {
        "name": row.name,
        "url": row.url,
        "username": row.username,
        "password": "set" if row.password else "not set",
        "verify_tls": row.verify_tls,
        "ca_pem": row.ca_pem,
        "ca_file": row.ca_file,
        "hotadd_proxy": row.hotadd_proxy,
        "source": row.source,
        "created_at": iso(row.created_at) if row.created_at else None,
        "updated_at": iso(row.updated_at),
    }
    if error:
        view["error"] = error
    return view


SKIPPED = {"ok": None, "kind": "skipped", "message": "saved untested (skip_test)"}


def saved_view(view: dict[str, Any], test: dict[str, object] | None) -> dict[str, Any]:
    """The answer to an add or a change (API and `vbm vcenter add|edit --json`): the vCenter and
    its connection test's result (shared/vsphere/probe.py: Probe.view), None when skipped."""
    return {**view, "test": SKIPPED if test is None else test}


def list_views(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Every vCenter, configured and stored, by name; never a password."""
    views = [_config_view(vc) for vc in settings.vcenters]
    rows = stored_rows(session, settings)
    vault: Vault | None = None
    problem: str | None = None
    if rows:
        try:
            vault = load_vault(settings)
        except VaultError as exc:
            problem = str(exc)
    for row in rows:
        error = problem
        if vault is not None and row.password is not None:
            try:
                vault.decrypt(row.password, password_of(row.name))
            except VaultError as exc:
                error = str(exc)
        views.append(row_view(row, error))
    return sorted(views, key=lambda v: v["name"])


def get_view(session: Session, settings: Settings, name: str) -> dict[str, Any]:
    for view in list_views(session, settings):
        if view["name"] == name:
            return view
    raise NotFound(f"no vCenter {name!r} (see GET /api/v1/vcenters)")


def configured(settings: Settings, name: str) -> VCenterSettings | None:
    return next((vc for vc in settings.vcenters if vc.name == name), None)


def _refuse_configured(settings: Settings, name: str, doing: str) -> None:
    if configured(settings, name) is not None:
        raise Conflict(
            f"vCenter {name!r} is configured (VBM_VCENTERS or the TOML file): {doing} it there"
            " instead; the configuration takes precedence over the API"
        )


def validated(body: Any) -> VCenterSettings:
    """A POST body as settings: 422 naming the field that is wrong or missing."""
    if not isinstance(body, dict):
        raise Invalid("(body)", "must be a JSON object with name, url, username and password")
    try:
        vc = VCenterSettings.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        raise Invalid(where, err["msg"]) from None
    _check_ca(vc)
    return vc


def _check_ca(vc: VCenterSettings) -> None:
    if vc.ca_pem:
        try:
            ssl.create_default_context(cadata=vc.ca_pem)
        except (ssl.SSLError, ValueError, TypeError):  # TypeError: not ASCII
            raise Invalid("ca_pem", "is not a PEM certificate (-----BEGIN CERTIFICATE-----...)") from None


def candidate_new(session: Session, settings: Settings, body: Any) -> VCenterSettings:
    """What POST would add, checked: a valid body and a free name."""
    vc = validated(body)
    _refuse_configured(settings, vc.name, "change")
    row = session.get(VCenterRow, vc.name)
    if row is not None and row.source == API:
        raise Conflict(f"a vCenter named {vc.name!r} exists: change it with PUT /api/v1/vcenters/{vc.name}")
    return vc


def candidate_change(session: Session, settings: Settings, name: str, body: Any) -> VCenterSettings:
    """What PUT would make of the stored vCenter `name` (fields left out stay as they are)."""
    _refuse_configured(settings, name, "change")
    row = _stored(session, name)
    if not isinstance(body, dict):
        raise Invalid("(body)", f"must be a JSON object of the fields to change ({', '.join(FIELDS)})")
    if "name" in body and body["name"] != name:
        raise Invalid("name", "cannot be changed (remove the vCenter and add it under the new name)")
    try:
        change = VCenterChange.model_validate({k: v for k, v in body.items() if k != "name"})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Invalid(".".join(str(p) for p in err["loc"]) or "(body)", err["msg"]) from None
    changes = change.model_dump(exclude_unset=True)
    password: SecretStr | None = changes.pop("password", None)
    if password is None:  # unchanged: the stored one (VaultError naming it when it cannot be read)
        password = settings_of(row, load_vault(settings)).password
    base = {
        "name": name,
        "url": row.url,
        "username": row.username,
        "verify_tls": row.verify_tls,
        "ca_pem": row.ca_pem,
        "ca_file": row.ca_file,
        "hotadd_proxy": row.hotadd_proxy,
    }
    return validated({**base, **changes, "password": password.get_secret_value()})


def save(session: Session, settings: Settings, vc: VCenterSettings, now: datetime) -> VCenterRow:
    """Store `vc` (new or changed) with its password encrypted."""
    _refuse_configured(settings, vc.name, "change")
    row = session.get(VCenterRow, vc.name)
    if row is None or row.source != API:
        if row is not None:  # a stale mirror of a vCenter no longer configured
            session.delete(row)
            session.flush()
        row = VCenterRow(name=vc.name, source=API, created_at=now)
    row.url, row.username, row.verify_tls = vc.url, vc.username, vc.verify_tls
    row.password = load_vault(settings).encrypt(vc.password.get_secret_value())
    row.ca_pem, row.ca_file, row.hotadd_proxy = vc.ca_pem, vc.ca_file, vc.hotadd_proxy
    row.updated_at = now
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # another request added the same name meanwhile
        raise Conflict(f"a vCenter named {vc.name!r} was added meanwhile: change it with PUT") from None
    return row


def _stored(session: Session, name: str) -> VCenterRow:
    row = session.get(VCenterRow, name)
    if row is None or row.source != API:
        raise NotFound(f"no vCenter {name!r} (see GET /api/v1/vcenters)")
    return row


def jobs_using(session: Session, name: str) -> list[str]:
    """The names of the jobs that name vCenter `name` (as theirs, or of a VM or selector)."""
    return sorted(
        job.name
        for job in session.scalars(select(Job))
        if job.vcenter == name or name in set(_named([job.vms, job.selection]))
    )


def _named(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "vcenter" and isinstance(item, str):
                yield item
            else:
                yield from _named(item)
    elif isinstance(value, list):
        for item in value:
            yield from _named(item)


def remove(session: Session, settings: Settings, name: str) -> None:
    """Delete a stored vCenter; 409 naming the jobs that still use it."""
    _refuse_configured(settings, name, "remove")
    row = _stored(session, name)
    users = jobs_using(session, name)
    if users:
        raise Conflict(f"vCenter {name!r} is used by job(s) {', '.join(users)}: change or delete them first")
    session.delete(row)
