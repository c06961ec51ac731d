"""The web UI in a real browser (Chromium through Playwright) against vbm on the lab."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from playwright.async_api import expect

from shared.catalog import sessions
from shared.model.access import Role
from shared.runtime.service import utcnow
from tests.ui.conftest import SIZE, System


async def test_log_in_see_the_dashboard_and_log_out(system: Callable[..., Awaitable[System]]) -> None:
    s = await system()
    page = await s.logged_in(Role.ADMIN)
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs")).to_be_visible()
    await s.shot(page, "dashboard")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.reload()
    assert errors == [], errors  # no script or CSP error on a page
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login")

    await page.get_by_label("User name").fill("vic")
    await page.get_by_label("Password").fill("wrong")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("did not work")
    assert await page.title() == "Error: Log in · vbm"
    await s.shot(page, "login")


async def test_the_first_admin_is_made_on_the_setup_page(system: Callable[..., Awaitable[System]]) -> None:
    s = await system(people=False)
    with s.api.ctx.sessions.begin() as session:
        token = sessions.new_setup_token(session, utcnow())
    context = await s.browser.new_context(viewport=SIZE, base_url=s.url)
    page = await context.new_page()
    s.pages.append(page)
    await page.goto("/login")  # nobody yet: the setup page
    await page.wait_for_url("**/setup")
    await page.get_by_label("Setup token").fill(token)
    await page.get_by_label("User name").fill("root")
    await page.get_by_label("Password", exact=True).fill("a long enough pass 1")
    await page.get_by_label("The password again").fill("a long enough pass 1")
    await s.shot(page, "setup")
    await page.get_by_role("button", name="Make the admin and log in").click()
    await page.wait_for_url("**/dashboard")
    await expect(page.get_by_text("root")).to_be_visible()
