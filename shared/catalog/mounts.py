"""NFS and CIFS shares as objects (REST API /api/v1/mounts and `vbm mount`), stored with the CIFS
password encrypted (shared/vault.py), as repository locations store their credentials.

Functions take an open session and leave committing to the caller; they raise `StoreError`s
naming the field at fault. A view carries the share's state (mounted, unmounted, stale: a stat
with a time limit, shared/mounts/probe.py), its mount point and the command line vbm runs; never
the password (`"password": "set"`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog.locations import jobs_using, under
from shared.clock import iso
from shared.db.objects import LocationRow, MountRow
from shared.errors import Conflict, Invalid, NotFound
from shared.mounts.manager import command_line, status
from shared.mounts.model import PLAIN, Share, mount_point, validated
from shared.settings import Settings
from shared.vault import VaultError
from shared.vault import load as load_vault


def what(name: str) -> str:
    return f"the password of mount {name!r}"


def decrypted(row: MountRow, settings: Settings) -> Share:
    """The stored share with its password (VaultError naming it when it cannot be read)."""
    body: dict[str, Any] = {k: v for k, v in (row.fields or {}).items() if v is not None}
    body["kind"] = row.kind
    if row.secrets:
        body.update(json.loads(load_vault(settings).decrypt(row.secrets, what(row.name))))
    return validated(body, row.name)


def row_view(
    row: MountRow, settings: Settings, *, live: bool = True, error: str | None = None
) -> dict[str, Any]:
    """A stored share; with `live` its state, read from the mount point (up to stat_timeout)."""
    fields = dict(row.fields or {})
    point = mount_point(settings.data_dir, row.name)
    view: dict[str, Any] = {"name": row.name, "kind": row.kind}
    view.update({k: fields.get(k) for k in PLAIN if k != "kind"})
    view["password"] = "set" if row.secrets else "not set"
    view["mount_point"] = str(point)
    try:
        view["command"] = command_line(_plain_share(row), settings)
    except Invalid as exc:  # a row an older vbm stored: shown, not used
        view["command"], error = "", error or str(exc)
    if live:
        view["state"], view["state_detail"] = status(row.name, settings)
    view["created_at"], view["updated_at"] = iso(row.created_at), iso(row.updated_at)
    if error:
        view["error"] = error
    return view


def _plain_share(row: MountRow) -> Share:
    body = {k: v for k, v in (row.fields or {}).items() if v is not None}
    return validated({**body, "kind": row.kind}, row.name)


def list_views(session: Session, settings: Settings) -> list[dict[str, Any]]:
    rows = session.scalars(select(MountRow).order_by(MountRow.name))
    return [row_view(r, settings) for r in rows]


def stored(session: Session, name: str) -> MountRow:
    row = session.get(MountRow, name)
    if row is None:
        raise NotFound(f"no mount {name!r} (see GET /api/v1/mounts)")
    return row


def get_view(session: Session, settings: Settings, name: str) -> dict[str, Any]:
    return row_view(stored(session, name), settings)


def candidate_new(session: Session, body: Any) -> Share:
    """What POST would add, checked: a valid body and a free name."""
    share = validated(body)
    if session.get(MountRow, share.name) is not None:
        raise Conflict(f"a mount named {share.name!r} exists: change it with PUT /api/v1/mounts/{share.name}")
    return share


def candidate_change(session: Session, settings: Settings, name: str, body: Any) -> Share:
    """What PUT would make of mount `name`: fields left out stay (the password too); `kind`
    cannot change (remove the mount and add it anew)."""
    row = stored(session, name)
    if not isinstance(body, dict):
        raise Invalid("(body)", "must be a JSON object of the fields to change")
    if "name" in body and body["name"] != name:
        raise Invalid("name", "cannot be changed (remove the mount and add it under the new name)")
    if "kind" in body and body["kind"] != row.kind:
        raise Invalid("kind", f"cannot be changed ({row.kind}): remove the mount and add it anew")
    try:
        current = decrypted(row, settings)
    except VaultError:
        current = _plain_share(row)  # the password is lost: the body must give it again
    merged: dict[str, Any] = {k: v for k, v in current.plain().items() if v not in (None, "")}
    if current.password:
        merged["password"] = current.password
    merged.update({k: v for k, v in body.items() if k != "name"})
    return validated(merged, name)


def save(session: Session, settings: Settings, share: Share, now: datetime) -> MountRow:
    """Store `share` (new or changed) with its password encrypted."""
    row = session.get(MountRow, share.name)
    if row is None:
        row = MountRow(name=share.name, created_at=now)
    row.kind = share.kind
    row.fields = {k: v for k, v in share.plain().items() if k != "kind"}
    row.secrets = (
        load_vault(settings).encrypt(json.dumps({"password": share.password})) if share.password else None
    )
    row.updated_at = now
    session.add(row)
    session.flush()
    return row


def users(session: Session, settings: Settings, name: str) -> list[str]:
    """What keeps mount `name` in use: locations and jobs whose repository is on it."""
    point = str(mount_point(settings.data_dir, name))
    found = [f"location {r.name}" for r in session.scalars(select(LocationRow)) if under(r.url, point)]
    found += [f"job {j}" for j in jobs_using(session, point)]
    if under(settings.repository_location, point):
        found.append("the configured repository (VBM_REPOSITORY)")
    return found


def remove(session: Session, settings: Settings, name: str) -> None:
    """Delete a stored mount; 409 naming the locations and jobs on it (the caller unmounts)."""
    row = stored(session, name)
    using = users(session, settings, name)
    if using:
        raise Conflict(
            f"mount {name!r} holds repositories: {', '.join(using)} use it; remove or move them first"
        )
    session.delete(row)


def all_shares(session: Session, settings: Settings) -> tuple[list[Share], dict[str, str]]:
    """Every stored share with its password, and the ones that cannot be read (name: why)."""
    shares, broken = [], {}
    for row in session.scalars(select(MountRow).order_by(MountRow.name)):
        try:
            shares.append(decrypted(row, settings))
        except (VaultError, Invalid) as exc:
            broken[row.name] = str(exc)
    return shares, broken
