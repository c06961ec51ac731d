"""The notification settings page with the Telegram and sendmail types and the per-channel level:
over plain HTTP (each type's fields, validation naming the field without echoing the bot token,
"Send test" reporting the Bot API's and sendmail's exact error) and in a real browser (the chosen
type's fields only; the screenshots of docs/ui/settings-channels.png, settings-users.png and
settings-keys.png). And the vCenters page's connection test showing the certificate's thumbprints."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from playwright.async_api import expect

from shared.catalog import channels as chstore
from shared.model.access import Role
from tests.gateway.conftest import MakeApi
from tests.gateway.test_vcenters import expected_thumbprints, tls_server
from tests.plugins.telegram import TOKEN, BotApi
from tests.ui.conftest import System
from tests.ui.test_jobs import _api, _get, _login
from tests.ui.test_settings import _post

__all__ = ["tls_server"]

FAILING_SENDMAIL = """#!/bin/sh
cat > /dev/null
echo "sendmail: fatal: queue file write error" >&2
exit 75
"""


async def test_telegram_and_sendmail_channels_and_their_send_test(
    make_api: MakeApi, tmp_path: Path, bot_api: BotApi
) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/settings/notifications")
    assert status == 200 and '<option value="telegram">' in page and '<option value="sendmail">' in page
    assert 'data-for-types="telegram"' in page and 'id="token"' in page and 'id="chat_id"' in page
    assert 'value="https://api.telegram.org"' in page and 'value="/usr/sbin/sendmail"' in page
    assert 'id="level"' in page and "/static/ui/channels.js" in page

    form = {"csrf_token": csrf, "name": "tg", "type": "telegram", "token": TOKEN, "chat_id": "general",
            "api_url": bot_api.api_url, "on": ["failure", "warning"], "level": "warning",
            "scope": "all"}  # fmt: skip
    status, page, _ = await _post(api, "/settings/notifications/channels", form)
    assert status == 422 and "<title>Error: " in page and 'aria-describedby="chat_id-error"' in page
    assert "Chat ID: " in page and 'value="general"' in page and TOKEN not in page
    status, page, _ = await _post(
        api, "/settings/notifications/channels", form | {"chat_id": "4242", "token": ""}
    )
    assert status == 422 and 'aria-describedby="token-error"' in page and "Bot token: " in page
    status, _, where = await _post(api, "/settings/notifications/channels", form | {"chat_id": "4242"})
    assert status == 303 and where == "/settings/notifications"
    status, page = await _get(api, "/settings/notifications")
    assert f"chat 4242 on 127.0.0.1:{bot_api.port} (token set)" in page and "warning and above" in page
    assert TOKEN not in page

    bot_api.blocked = {"4242"}
    async with api.client.post("/settings/notifications/test", data={"csrf_token": csrf, "channel": "tg"},
                               headers={"HX-Request": "true"}) as resp:  # fmt: skip
        text = await resp.text()
    assert resp.status == 200 and 'data-tested="failed"' in text, text
    assert "Forbidden: bot was blocked by the user (error 403)" in text and TOKEN not in text
    bot_api.blocked = set()
    status, page, _ = await _post(api, "/settings/notifications/test", {"csrf_token": csrf, "channel": "tg"})
    assert status == 200 and 'data-tested="ok"' in page and bot_api.posted

    status, page = await _get(api, "/settings/notifications/channels/tg/edit")
    assert status == 200 and 'value="4242"' in page and "type a new one to replace it" in page
    assert '<option value="warning" selected>' in page and TOKEN not in page
    edit = {"csrf_token": csrf, "type": "telegram", "chat_id": "@vbm_alerts", "api_url": bot_api.api_url,
            "on": ["failure"], "level": "critical", "scope": "all"}  # fmt: skip
    status, _, _ = await _post(api, "/settings/notifications/channels/tg/edit", edit)
    assert status == 303
    with api.ctx.sessions() as s:
        view = chstore.get_view(s, api.ctx.settings, "tg")
    assert view["chat_id"] == "@vbm_alerts" and view["level"] == "critical" and view["token"] == "set"

    program = tmp_path / "sendmail"
    program.write_text(FAILING_SENDMAIL)
    program.chmod(0o755)
    mail = {"csrf_token": csrf, "name": "local", "type": "sendmail", "to": "ops@example.com",
            "sendmail": str(program), "on": ["failure"], "level": "info", "scope": "all"}  # fmt: skip
    status, _, _ = await _post(api, "/settings/notifications/channels", mail)
    assert status == 303
    status, page = await _get(api, "/settings/notifications")
    assert f"ops@example.com through {program}" in page
    status, page, _ = await _post(
        api, "/settings/notifications/test", {"csrf_token": csrf, "channel": "local"}
    )
    assert status == 200 and 'data-tested="failed"' in page
    assert f"{program} exited with code 75: sendmail: fatal: queue file write error" in page


async def test_the_channel_form_in_the_browser_and_the_settings_screenshots(
    system: Callable[..., Awaitable[System]], bot_api: BotApi
) -> None:
    s = await system()
    page = await s.logged_in(Role.ADMIN)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto("/settings/notifications")
    await expect(page.locator("#to")).to_be_visible()  # email: its recipients, no bot token
    await expect(page.locator("#token")).to_be_hidden()
    await page.locator("#type").select_option("telegram")
    await expect(page.locator("#token")).to_be_visible()
    await expect(page.locator("#to")).to_be_hidden()
    await page.locator("#name").fill("ops-telegram")
    await page.locator("#token").fill(TOKEN)
    await page.locator("#chat_id").fill("-1001234567890")
    await page.locator("#api_url").fill(bot_api.api_url)
    await page.locator("#level").select_option("warning")
    await page.get_by_role("button", name="Add channel").click()
    await page.wait_for_url("**/settings/notifications")
    bot_api.blocked = {"-1001234567890"}
    row = page.locator("#ch-ops-telegram")
    await expect(row).to_contain_text("warning and above")
    await row.get_by_role("button", name="Send test").click()
    await expect(row.locator("[data-tested=failed]")).to_be_visible(timeout=12_000)
    await expect(row.locator(".tested-error")).to_contain_text(re.compile("bot was blocked by the user"))
    assert TOKEN not in await page.content()
    await page.locator("#type").select_option("sendmail")
    await expect(page.locator("#sendmail")).to_be_visible()
    await s.shot(page, "settings-channels")

    await page.goto("/settings/users")
    await page.get_by_label("Name", exact=True).fill("nina")
    await page.get_by_label("Role", exact=True).select_option("operator")
    await page.get_by_role("button", name="Add user").click()
    await expect(page.locator("#user-nina")).to_contain_text("operator")
    await s.shot(page, "settings-users")
    await page.goto("/settings/keys")
    await page.get_by_label("Name", exact=True).fill("backup-script")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("[data-minted]")).to_contain_text("only this once")
    await s.shot(page, "settings-keys")
    assert errors == [], errors


async def test_the_vcenter_test_shows_the_certificates_thumbprints(
    make_api: MakeApi, tmp_path: Path, tls_server: tuple[str, str]
) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    url, _ = tls_server
    sha256, sha1 = expected_thumbprints(url)
    form = {"csrf_token": csrf, "name": "vc-tls", "url": url, "username": "bob", "password": "pw",
            "verify_tls": "on", "skip_test": "on"}  # fmt: skip
    status, _, _ = await _post(api, "/settings/vcenters", form)
    assert status == 303
    async with api.client.post("/settings/vcenters/vc-tls/test", data={"csrf_token": csrf},
                               headers={"HX-Request": "true"}) as resp:  # fmt: skip
        text = await resp.text()
    assert resp.status == 200 and "Failed at tls" in text and "not trusted" in text, text
    assert f"SHA-256 <code>{sha256}</code>, SHA-1 <code>{sha1}</code>" in text
