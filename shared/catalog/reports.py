"""Signed restore-test reports: evidence an auditor can check without trusting the database.

The server has one Ed25519 signing key, made on first use in `<data_dir>/keys/report-signing.pem`
(mode 0600); its public key (PEM) is served by the API and printed by `vbm report public-key`.
A report is a JSON object; what is signed is its canonical form (keys sorted, no whitespace,
UTF-8), and a signed report is stored and handed out as

    {"report": {...}, "signature": "<base64 Ed25519 signature>", "key_id": "<16 hex>"}

`key_id` is the first 16 hex digits of the SHA-256 of the raw public key, so a verifier knows
which key to use after a key change. `verify()` needs only the signed report and the public key.

The stored reports are listed and read here too, for the API and `vbm report` alike.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.clock import iso
from shared.db.models import RestoreReport
from shared.errors import NotFound

KEY_FILE = Path("keys") / "report-signing.pem"


class ReportError(Exception):
    """A signed report does not verify, or is not a signed report; the message says which."""


def canonical(report: dict[str, Any]) -> bytes:
    return json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The server's key, created (atomically, 0600) the first time it is needed."""
    path = data_dir / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        try:
            os.link(tmp, path)  # a racing first use keeps the key that won
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReportError(f"{path} is not an Ed25519 private key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "report": report,
        "signature": base64.b64encode(key.sign(canonical(report))).decode(),
        "key_id": key_id(key),
    }


def verify(signed: dict[str, Any], public_key_pem: str) -> dict[str, Any]:
    """The report if `signed` verifies with the key; ReportError saying why if not."""
    try:
        report, signature = signed["report"], base64.b64decode(signed["signature"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise ReportError("not a signed report (needs report, signature, key_id)") from None
    public = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(public, Ed25519PublicKey):
        raise ReportError("the public key is not an Ed25519 key")
    if signed.get("key_id") != key_id(public):
        raise ReportError(f"signed with key {signed.get('key_id')}, not with this key ({key_id(public)})")
    try:
        public.verify(signature, canonical(report))
    except InvalidSignature:
        raise ReportError("the signature does not match the report: it was changed after signing") from None
    return dict(report)


def report_view(row: RestoreReport) -> dict[str, Any]:
    """A report as lists show it (GET /api/v1/reports, `vbm report list --json`)."""
    return {
        "id": row.id,
        "restore_point_id": row.restore_point_id,
        "vm_name": row.vm_name,
        "ok": row.ok,
        "created_at": iso(row.created_at),
    }


def public_key_view(key: Ed25519PrivateKey) -> dict[str, str]:
    """The key that verifies the reports, as GET /api/v1/reports/public-key answers it."""
    return {"key_id": key_id(key), "public_key_pem": public_pem(key)}


def list_reports(session: Session, vm: str | None = None, limit: int | None = 500) -> list[RestoreReport]:
    """Restore-test reports, newest first (the first `limit`, None: all); of one VM (by name)
    when `vm` is given."""
    query = select(RestoreReport).order_by(RestoreReport.created_at.desc())
    if vm:
        query = query.where(RestoreReport.vm_name == vm)
    return list(session.scalars(query.limit(limit)))


def signed_report(session: Session, report_id: str) -> str:
    """A signed report as stored (JSON text: report, signature, key_id); NotFound names it."""
    row = session.get(RestoreReport, report_id)
    if row is None:
        raise NotFound(f"no report {report_id!r}")
    return row.signed
