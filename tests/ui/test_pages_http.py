"""The web UI over plain HTTP (the browser tests are in tests/ui/test_browser.py): the doors
(setup, log in, log out), the redirect to the login page, CSRF on forms, error pages, and that
every page declares its permission and stays out of the REST API's document."""

from __future__ import annotations

from pathlib import Path

from services.gateway.access import declared
from services.gateway.openapi import document
from services.gateway.ui.render import is_page
from shared.catalog import sessions, users
from shared.model.access import Role
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import MakeApi
from tests.ui.conftest import csrf_of

HTML = {"Accept": "text/html"}


async def test_the_doors(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", with_key=False)
    c = api.client
    async with c.get("/", headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
    async with c.get("/dashboard", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/login?next=/dashboard"
    async with c.get("/login", allow_redirects=False) as resp:  # nobody yet: the setup page
        assert resp.status == 303 and resp.headers["Location"] == "/setup"

    with api.ctx.sessions.begin() as s:
        token = sessions.new_setup_token(s, utcnow())
    form = {"token": "wrong", "name": "root", "password": "a long enough pass 1", "password2": "x"}
    async with c.post("/setup", data=form) as resp:
        page = await resp.text()
        assert resp.status == 422 and "The two passwords differ" in page and 'value="root"' in page
        assert "<title>Error: First start" in page
    form["password2"] = form["password"]
    async with c.post("/setup", data=form) as resp:
        assert resp.status == 422 and "setup token" in await resp.text()
    async with c.post("/setup", data={**form, "token": token}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
    async with c.get("/dashboard") as resp:
        page = await resp.text()
        assert resp.status == 200 and "root" in page and "(admin)" in page
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    csrf = csrf_of(page)

    async with c.post("/logout", data={}) as resp:  # no CSRF token: refused, as an HTML page
        assert resp.status == 403 and "CSRF" in await resp.text()
        assert resp.content_type == "text/html"
    async with c.post("/logout", data={"csrf_token": csrf}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    async with c.get("/dashboard", allow_redirects=False) as resp:
        assert resp.status == 303


async def test_log_in_refused_then_admitted(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", with_key=False)
    rules = SecuritySettings()
    with api.ctx.sessions.begin() as s:
        users.add(s, "vera", Role.VIEWER, utcnow(), rules, "a long enough pass 2")
    c = api.client
    async with c.get("/login?next=//evil.example/x") as resp:
        assert 'name="next" value="/dashboard"' in await resp.text()  # never another site
    async with c.post("/login", data={"name": "vera", "password": "nope", "next": "/dashboard"}) as resp:
        page = await resp.text()
        assert resp.status == 401 and 'role="alert"' in page and 'value="vera"' in page
    form = {"name": "vera", "password": "a long enough pass 2", "next": "/dashboard"}
    async with c.post("/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
        assert "SameSite=Lax" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]
    async with c.get("/no-such-page", headers=HTML) as resp:
        assert resp.status == 404 and resp.content_type == "text/html" and "no such path" in await resp.text()
    async with c.get("/api/v1/no-such", headers=HTML) as resp:  # the API answers problems, always
        assert resp.status == 404 and resp.content_type == "application/problem+json"


async def test_pages_declare_permissions_and_stay_out_of_the_api_document(
    make_api: MakeApi, tmp_path: Path
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    app = api.client.app
    pages = [r for r in app.router.routes() if r.method != "HEAD" and is_page(r.handler)]
    assert len(pages) >= 6
    assert all(declared(r.handler) is not None for r in pages)
    documented = set(document(app)["paths"])
    assert not documented & {r.resource.canonical for r in pages if r.resource is not None}


async def test_the_doors_are_audited_without_secrets(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    with api.ctx.sessions.begin() as s:
        users.add(s, "olga", Role.OPERATOR, utcnow(), SecuritySettings(), "a long enough pass 3")
    form = {"name": "olga", "password": "a long enough pass 3", "next": "/dashboard"}
    async with api.client.post("/login", data={**form, "password": "wrong one"}) as resp:
        assert resp.status == 401
    async with api.client.post("/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303
    status, page = await api.call("GET", "/audit?action=login")
    assert status == 200 and [r["result"][:3] for r in page["records"]] == ["ok", "401"]
    assert all(r["target"] == "user:olga" for r in page["records"])
    assert "a long enough pass 3" not in str(page) and "wrong one" not in str(page)
