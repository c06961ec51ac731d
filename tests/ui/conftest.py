"""The web UI's tests: the gateway's running-app fixture, and for the browser tests Chromium
(Debian's, driven by Playwright: `playwright install` cannot download here) against the whole
system on the lab (the pipeline's services, the gateway on a real port)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, async_playwright

from shared.catalog import users
from shared.model.access import Role
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi, lab_vcenter, make_api
from tests.pipeline.conftest import Pipeline, pipeline_factory

__all__ = ["make_api", "pipeline_factory"]

PEOPLE = {Role.ADMIN: ("ada", "admin pass phrase 1"), Role.OPERATOR: ("otto", "operator pass phrase 2"),
          Role.VIEWER: ("vic", "viewer pass phrase 3")}  # fmt: skip
SIZE = {"width": 1280, "height": 800}


def add_people(api: Api) -> None:
    """The users of PEOPLE, one of each role, in `api`'s database."""
    with api.ctx.sessions.begin() as s:
        for role, (name, password) in PEOPLE.items():
            users.add(s, name, role, utcnow(), SecuritySettings(), password)


def csrf_of(html: str) -> str:
    """The session's CSRF token, as a page carries it in its meta tag."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, html[:400]
    return found[1]


async def log_in(
    client: TestClient[Any, Any], name: str, password: str, next_page: str = "/dashboard"
) -> str:
    """Log `client` in through the login form (whoever was in is logged out), landing on
    `next_page`; the session's CSRF token."""
    client.session.cookie_jar.clear()
    form = {"name": name, "password": password, "next": next_page}
    async with client.post("/login", data=form) as resp:
        page = await resp.text()
        assert resp.status == 200, page[:300]
    return csrf_of(page)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is missing: scripts/install-system-deps.sh --for-tests installs it"
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield launched
        await launched.close()


@dataclass
class System:
    """vbm on the lab with a gateway a browser can reach, and a user of each role."""

    pipeline: Pipeline
    api: Api
    browser: Browser
    shots: Path
    pages: list[Page] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.api.client.make_url("")).rstrip("/")

    async def logged_in(self, role: Role = Role.ADMIN) -> Page:
        """A new browser page (1280x800) logged in as the user of `role`, on the dashboard."""
        context = await self.browser.new_context(viewport=SIZE, base_url=self.url)
        page = await context.new_page()
        self.pages.append(page)
        await page.goto("/login")
        name, password = PEOPLE[role]
        await page.get_by_label("User name").fill(name)
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url("**/dashboard")
        return page

    async def shot(self, page: Page, name: str) -> Path:
        """A screenshot of the page under the test's temp dir, and in $VBM_UI_SHOTS when set."""
        path = self.shots / f"{name}.png"
        await page.screenshot(path=str(path), full_page=False)
        keep = os.environ.get("VBM_UI_SHOTS")  # `make ui-shots`: docs/ui/ gets them too
        if keep:
            shutil.copyfile(path, Path(keep) / path.name)
        return path


@pytest.fixture
async def system(
    pipeline_factory: Callable[..., Pipeline], make_api: MakeApi, browser: Browser, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[System]]]:
    made: list[System] = []

    async def make(people: bool = True, **pipeline_args: object) -> System:
        p = pipeline_factory(**pipeline_args)
        p.start()
        api = await make_api(
            f"sqlite:///{p.data / 'vbm.db'}",
            vcenters=(lab_vcenter(p.lab),),
            gateway={"events_heartbeat": 0.5, "events_poll": 0.05},
            with_key=people,  # an API key is a user's: none either
        )
        if people:  # else nobody yet: the first admin is made on /setup
            with api.ctx.sessions.begin() as s:
                for role, (name, password) in PEOPLE.items():
                    users.add(s, name, role, utcnow(), SecuritySettings(), password)
        shots = tmp_path / "screenshots"
        shots.mkdir(exist_ok=True)
        made.append(System(p, api, browser, shots))
        return made[-1]

    yield make
    for sys_ in made:
        for page in sys_.pages:
            await page.context.close()
