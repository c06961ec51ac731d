"""The web UI, served by the gateway: server-rendered Jinja2 pages (services/gateway/templates),
htmx for partial updates and the browser's EventSource on GET /api/v1/events for live progress,
front-end libraries vendored in services/gateway/static (docs/design.md, "The web UI").

Pages read and change through the same catalog functions as the REST API, under the same access
model: each page declares its permission with `@needs`, and what a role may not do is not shown
to it (the server refuses it anyway)."""

from __future__ import annotations

from aiohttp import web

from services.gateway.ui import (
    alerts,
    audit_page,
    backups,
    calendar,
    dashboard,
    job_actions,
    jobs,
    people,
    restore,
    restores_list,
    runs,
    session_pages,
    settings_channels,
    settings_mounts,
    settings_repos,
    settings_vcenters,
    storage,
    vms,
)
from services.gateway.ui.render import ENV, environment

PAGES = (
    session_pages,
    dashboard,
    jobs,
    job_actions,
    runs,
    calendar,
    vms,
    backups,
    restores_list,  # before restore: /restores/rows is not a restore's id
    restore,
    storage,
    alerts,
    settings_vcenters,
    settings_channels,
    settings_repos,
    settings_mounts,
    people,
    audit_page,
)


def install(app: web.Application) -> None:
    """The UI's templates and pages on the gateway's app."""
    app[ENV] = environment()
    for module in PAGES:
        app.router.add_routes(module.routes)
