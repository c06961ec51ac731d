"""vbm's mark on its own snapshots, which no one can reproduce by naming a snapshot `vbm-...`.

A backup snapshot's description ends with `[vbm:<mac>]`, an HMAC-SHA256 (first 24 hex digits) of
the vCenter, the VM, the snapshot's name and its run, under a key of this installation (made
once, kept in the database's `meta` table). A snapshot is vbm's only when its mark verifies:
the orphan sweep removes only those, and a user's snapshot named `vbm-...` is reported as the
user's (a backup refuses to read a snapshot chain), never deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.work import Meta

KEY_NAME = "snapshot-marker-key"
MARK = re.compile(r"\[vbm:([0-9a-f]{24})\]\s*$")


def key(sessions: sessionmaker[Session]) -> bytes:
    """The installation's marker key, made on first use (racing first uses keep one)."""
    with sessions() as s:
        row = s.get(Meta, KEY_NAME)
        if row is not None:
            return bytes.fromhex(row.value)
    try:
        with sessions.begin() as s:
            s.add(Meta(key=KEY_NAME, value=secrets.token_hex(32)))
    except IntegrityError:
        pass
    with sessions() as s:
        row = s.get(Meta, KEY_NAME)
        assert row is not None
        return bytes.fromhex(row.value)


def _mac(secret: bytes, vcenter: str, vm_moref: str, name: str, run_id: str) -> str:
    text = "\0".join((vcenter, vm_moref, name, run_id)).encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()[:24]


def description(secret: bytes, vcenter: str, vm_moref: str, name: str, run_id: str) -> str:
    return (
        f"vbm backup snapshot of run {run_id}: removed automatically when its backup ends"
        f" [vbm:{_mac(secret, vcenter, vm_moref, name, run_id)}]"
    )


def run_of(description: str | None) -> str | None:
    """The run id a vbm description names (not yet checked)."""
    found = re.match(r"vbm backup snapshot of run (\S+):", description or "")
    return found.group(1) if found else None


def is_vbms(secret: bytes, vcenter: str, vm_moref: str, name: str, description: str | None) -> bool:
    """Whether this snapshot carries vbm's mark for exactly this vCenter, VM and name."""
    found = MARK.search(description or "")
    run_id = run_of(description)
    if found is None or run_id is None:
        return False
    return hmac.compare_digest(found.group(1), _mac(secret, vcenter, vm_moref, name, run_id))
