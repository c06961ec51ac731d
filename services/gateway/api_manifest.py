"""GET /api/v1/backups/{id}/manifest.json: a backup's files with their SHA-256 (roadmap 2.1/2.2);
the document is built by shared/catalog/manifest_json.py (the CLI's `vbm backups manifest` too)."""

from __future__ import annotations

from aiohttp import web

from services.gateway.access import needs
from services.gateway.answers.runs import ManifestJson
from services.gateway.apidoc import op
from services.gateway.common import CTX, in_session, json_response
from shared.catalog import locations as locstore
from shared.catalog import manifest_json
from shared.model.access import Permission
from shared.repo import RepoError
from shared.repo.locations import opened

routes = web.RouteTableDef()


@routes.get("/api/v1/backups/{rp_id}/manifest.json")
@needs(Permission.BACKUPS_READ)
@op(
    "manifest.json of a restore point: every file with its SHA-256",
    answer=ManifestJson,
    errors=(503,),
    cli="vbm backups manifest RESTORE_POINT_ID --json",
)
async def get_manifest(request: web.Request) -> web.Response:
    """Every file of the restore point (flat disk images as exported, vmx, nvram, descriptors)
    with `path`, `size_bytes` and `sha256` (null with `sha256_missing` saying why), and vbm's own
    fields under `vbm`. 404 for an unknown id; 503 when the repository cannot be read."""
    rp_id = request.match_info["rp_id"]
    row = await in_session(request, lambda s: manifest_json.catalogued(s, rp_id))
    ctx = request.app[CTX]
    location = row["repository"]
    try:
        async with opened(location, locstore.lookup(ctx.settings, ctx.sessions)(location)) as repo:
            document = await manifest_json.build(repo, row)
    except (RepoError, OSError) as exc:
        raise web.HTTPServiceUnavailable(text=f"repository {location}: {exc}") from None
    return json_response(document)
