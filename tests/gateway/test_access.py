"""The one access model: every route declares its permission, and each role gets exactly what
shared/model/access.py grants it: a role x route matrix against the real app (SQLite), with
401 without identity, 403 with the wrong role, and never a 5xx."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from services.gateway.access import declared
from services.gateway.app import create_app
from services.gateway.ui.render import is_page
from shared.catalog import apikeys, users
from shared.model.access import GRANTS, PUBLIC, Permission, Role, allows
from shared.runtime.service import utcnow
from shared.settings import Settings
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import MakeApi


def _routes(app: web.Application) -> list[tuple[str, str, Any]]:
    out = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        out.append((route.method, str(path), route.handler))
    return out


def test_every_route_declares_a_permission(make_app: web.Application) -> None:
    missing = [f"{m} {p}" for m, p, h in _routes(make_app) if declared(h) is None]
    assert missing == [], f"routes without @needs: {missing}"
    assert len(_routes(make_app)) >= 50


def test_the_roles_nest_and_viewers_only_read() -> None:
    assert GRANTS[Role.VIEWER] < GRANTS[Role.OPERATOR] < GRANTS[Role.ADMIN]
    assert all(p.value.endswith(":read") or p == Permission.SELF for p in GRANTS[Role.VIEWER])
    assert not allows(Role.OPERATOR, Permission.JOBS_WRITE)
    assert not allows(Role.VIEWER, Permission.RESTORES_RUN)  # a disk image is data, not a view
    assert not allows(Role.OPERATOR, Permission.USERS_READ)


@pytest.fixture
def make_app() -> web.Application:
    # create_app only keeps the context and reads the heartbeat interval: no server needed
    return create_app(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]


# A value for every path parameter: the route is reached, the object does not exist (404) or
# the body is wrong (422): what matters is that the access check came first.
PARAMS = {
    "job_id": "no-such-job",
    "run_id": "no-such-run",
    "rp_id": "no-such-point",
    "disk": "2000",
    "restore_id": "no-such-restore",
    "report_id": "no-such-report",
    "alert_id": "999999",
    "name": "nobody-here",
    "key": "no-such-key",
    "action": "cancel",  # the web UI's /restores/{restore_id}/{action:cancel|migrate|stop}
    "switch": "enable",  # the web UI's /jobs/{job_id}/{switch:enable|disable}
}


def _fill(path: str) -> str:
    if path == "/api/v1/events":  # a stream that never ends: a bad filter checks the access and stops
        return path + "?type=nope"
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), path)


async def test_role_by_route_matrix(make_api: MakeApi, tmp_path: Any) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", with_key=False)
    rules = SecuritySettings()
    keys: dict[Role, str] = {}
    with api.ctx.sessions.begin() as s:
        for role in Role:
            users.add(s, f"{role.value}-user", role, utcnow(), rules)
            keys[role] = apikeys.create(s, f"k-{role.value}", utcnow(), owner=f"{role.value}-user")[1]
    checked = 0
    for method, path, handler in _routes(api.client.app):
        needed = declared(handler)
        url = _fill(path)
        if needed == PUBLIC:
            continue
        body = {} if method in ("POST", "PUT", "PATCH") else None
        async with api.client.request(method, url, json=body, allow_redirects=False) as resp:
            if is_page(handler):  # a page sends nobody to the login page
                assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")
            else:
                assert resp.status == 401, (method, path, "nobody", resp.status, await resp.text())
        for role, key in keys.items():
            headers = {"X-API-Key": key}
            async with api.client.request(
                method, url, json=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                text = await resp.text()
            assert status < 500, (method, path, role, status, text)
            assert isinstance(needed, Permission)
            if allows(role, needed):
                assert status != 403 and status != 401, (method, path, role, status, text)
            else:
                assert status == 403, (method, path, role, status, text)
                assert needed.value in text and role.value in text
            checked += 1
    assert checked >= 3 * 45
