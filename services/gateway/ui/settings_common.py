"""What the Settings pages (settings_vcenters, settings_repos, settings_channels) share: removing
a stored item after its name is typed, refused (409) while something uses it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.common import in_session
from shared.errors import Conflict


async def removed(
    request: web.Request,
    what: str,
    remove: Callable[[Session], Any],
    again: Callable[..., Awaitable[web.Response]],
) -> web.Response | None:
    """None once the item named in the path is removed; else its list page again (`again`) with
    why not beside it: 422 when the typed name does not match, 409 with the catalog's reason."""
    name, form = request.match_info["name"], await request.post()
    if form.get("confirm_name") != name:
        return await again(
            request, status=422, refused={name: f"Type the {what}'s name to confirm. Nothing was removed."}
        )
    try:
        await in_session(request, remove, write=True)
    except Conflict as exc:
        return await again(request, status=409, refused={name: f"{exc}. Nothing was removed."})
    return None
