"""One restore point in full, as `GET /api/v1/backups/{id}` and `vbm backups show ID` give it:
the catalog's view, its copies to secondary repositories, and its manifest read from the
repository (or why it could not be read: the catalog's answer still stands)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog import replication
from shared.catalog import runs as runstore
from shared.db.models import Replication
from shared.repo import RepoError
from shared.repo.locations import CredentialsFor, opened


def catalogued(session: Session, rp_id: str) -> dict[str, Any]:
    """The restore point's view with its copies (NotFound for an unknown id)."""
    view = runstore.backup_view(runstore.get_backup(session, rp_id))
    reps = session.scalars(select(Replication).where(Replication.restore_point_id == rp_id))
    return {**view, "replications": [replication.view(r) for r in reps]}


async def with_manifest(view: dict[str, Any], credentials: CredentialsFor) -> dict[str, Any]:
    """`view` (from `catalogued`) with `manifest` and `manifest_error` (one of them null)."""
    location = view["repository"]
    manifest: dict[str, Any] | None = None
    error: str | None = None
    try:
        async with opened(location, credentials(location)) as repo:
            manifest = (await repo.load(view["id"])).model_dump(mode="json")
    except (RepoError, OSError) as exc:
        error = str(exc)
    return {**view, "manifest": manifest, "manifest_error": error}
