"""The front-end libraries the gateway serves are its own files (scripts/vendor-web.py put them in
services/gateway/static/vendor, VENDORED.json records them): each is there as recorded, the
reference page and /static serve them, /static serves nothing else, and nothing points a browser
at a host outside the gateway (no CDN, no font host)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from services.gateway.app import create_app
from services.gateway.openapi import REFERENCE, STATIC
from shared.settings import Settings

VENDORED = STATIC / "vendor" / "VENDORED.json"

# What a browser would fetch by itself: a src/href attribute, a CSS url() or @import, or a script
# that builds an element whose src is a full URL. Links a person may follow (an <a href>) are not.
_FETCHED = re.compile(
    r"""(?:\bsrc\s*[=:]\s*|url\(\s*|@import\s+|<link[^>]*href\s*=\s*)["']?(https?:)?//(?!localhost\b)"""
)
# ...and the hosts a page loads scripts, styles or fonts from.
_CDN = re.compile(r"fonts\.(googleapis|gstatic)\.com|cdn\.jsdelivr|unpkg\.com|cdnjs\.")
# The one a Redoc 2.x bundle has: its menu's logo, kept out by the reference page's img-src.
_ALLOWED = {"redoc.standalone.js": {'src:"https://cdn.redoc.ly/redoc/logo-mini.svg'}}


def _recorded() -> list[dict[str, Any]]:
    packages: list[dict[str, Any]] = json.loads(VENDORED.read_text())["packages"]
    return packages


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    # the public routes need no context: nothing to start (no heartbeats, no live hub)
    app = create_app(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]
    app.cleanup_ctx.clear()
    async with TestClient(TestServer(app)) as c:
        yield c


def test_each_vendored_file_is_there_as_recorded() -> None:
    packages = _recorded()
    assert {p["package"] for p in packages} >= {"redoc"}
    for package in packages:
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), package
        assert package["integrity"].startswith("sha512-"), package
        assert "LICENSE" in package["files"], package
        for name, sha256 in package["files"].items():
            path = STATIC / "vendor" / package["package"] / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, path
    on_disk = {
        p.relative_to(STATIC / "vendor").as_posix() for p in (STATIC / "vendor").rglob("*") if p.is_file()
    }
    listed = {f"{p['package']}/{n}" for p in packages for n in p["files"]}
    assert on_disk - {"VENDORED.json"} == listed, "a file in static/vendor that VENDORED.json does not record"


async def test_the_reference_page_loads_redoc_from_the_gateway(client: TestClient[Any, Any]) -> None:
    async with client.get("/api/v1/docs") as resp:
        assert resp.status == 200
        page = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert "/static/vendor/redoc/redoc.standalone.js" in page
    assert not re.search(r"https?://", page), "the reference page names a host"
    assert "default-src 'self'" in csp and "img-src 'self' data:" in csp
    redoc = STATIC / "vendor" / "redoc" / "redoc.standalone.js"
    async with client.get("/static/vendor/redoc/redoc.standalone.js") as resp:
        assert resp.status == 200
        assert await resp.read() == redoc.read_bytes()
        assert "javascript" in resp.content_type
    async with client.get("/api/v1/openapi.json") as resp:
        assert resp.status == 200
        assert (await resp.json())["openapi"].startswith("3.1")


@pytest.mark.parametrize(
    "path",
    [
        "/static/vendor/redoc/nothing.js",
        "/static/vendor",
        "/static/%2E%2E/openapi.py",
        "/static/vendor/%2e%2e/%2e%2e/app.py",
        "/static/..%2Fopenapi.py",
        "/static/%2Fetc%2Fpasswd",
        "/static/vendor/../openapi.py",
    ],
)
async def test_static_serves_nothing_else(client: TestClient[Any, Any], path: str) -> None:
    async with client.get(URL(path, encoded=True)) as resp:
        assert resp.status == 404, path
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
    assert body["status"] == 404 and body["detail"].startswith("no such file: /static/"), body


def test_no_static_file_fetches_from_outside_the_gateway() -> None:
    found = []
    for path in STATIC.rglob("*"):
        if path.is_file() and path.suffix in {".js", ".css", ".html", ".json", ".svg"}:
            text = path.read_text(errors="replace")
            for allowed in _ALLOWED.get(path.name, ()):
                text = text.replace(allowed, "")
            found += [f"{path.name}: {text[m.start() : m.end() + 40]!r}" for m in _FETCHED.finditer(text)]
            found += [f"{path.name}: {m.group()!r}" for m in _CDN.finditer(text)]
    assert found == []
    assert not _FETCHED.search(REFERENCE) and not _CDN.search(REFERENCE)
