"""Settings for people (users, API keys) and the audit log page: over plain HTTP (rendering,
access by role, validation, odd input) and once in a real browser on the lab."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.fernet import Fernet
from playwright.async_api import expect

from shared.catalog import apikeys, secrets, users
from shared.db.objects import SMTPRow
from shared.model.access import Role
from shared.runtime.service import utcnow
from shared.vault import load
from tests.gateway.conftest import Api, MakeApi
from tests.ui.conftest import PEOPLE, System, add_people, log_in


async def _api(make_api: MakeApi, tmp_path: Path) -> Api:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    add_people(api)
    return api


async def _login(api: Api, role: Role) -> str:
    return await log_in(api.client, *PEOPLE[role], "/settings/keys")


async def _get(api: Api, path: str) -> tuple[int, str]:
    async with api.client.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def _post(api: Api, path: str, data: dict[str, str]) -> tuple[int, str]:
    async with api.client.post(path, data=data, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_users_add_change_disable_and_the_last_admin(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/settings/users")
    assert status == 200 and "otto" in page and "Add user" in page and "never" in page
    assert "No secret stored yet" in page
    bad = {"csrf_token": csrf, "name": "bad name!", "role": "operator", "display_name": "Kept Here"}
    status, page = await _post(api, "/settings/users", bad)
    assert status == 422 and "<title>Error: Users" in page and 'role="alert"' in page
    assert 'aria-invalid="true"' in page and 'value="Kept Here"' in page and 'value="bad name!"' in page
    status, page = await _post(api, "/settings/users", {**bad, "name": "pia", "password": "short"})
    assert status == 422 and 'id="password-error"' in page
    status, _ = await _post(api, "/settings/users", {**bad, "name": "pia", "password": ""})
    assert status == 303
    status, page = await _post(api, "/settings/users", {**bad, "name": "pia"})
    assert status == 422 and "exists already" in page
    assert (await _post(api, "/settings/users/pia", {"csrf_token": csrf, "do": "role", "role": "admin"}))[
        0
    ] == 303
    assert (await _post(api, "/settings/users/pia", {"csrf_token": csrf, "do": "disable"}))[0] == 303
    with api.ctx.sessions.begin() as s:
        pia = users.info(users.get(s, "pia"))
        assert pia.role == Role.ADMIN and not pia.enabled and pia.display_name == "Kept Here"
        for other in users.list_users(s):  # the test API's own admin: ada is the last enabled one
            if other.role == Role.ADMIN and other.name != "ada":
                users.change(s, other.name, utcnow(), enabled=False)
    status, page = await _post(
        api, "/settings/users/ada", {"csrf_token": csrf, "do": "role", "role": "viewer"}
    )
    assert status == 409 and "last enabled admin" in page and "Not changed: ada" in page
    data = {"csrf_token": csrf, "do": "password", "password": "a new long pass phrase"}
    assert (await _post(api, "/settings/users/otto", data))[0] == 303
    status, page = await _post(api, "/settings/users/otto", {**data, "password": "x"})
    assert status == 422 and "at least" in page and "a new long" not in page
    for odd in ("/settings/users/nobody", "/settings/users/otto"):
        status, page = await _post(
            api, odd, {"csrf_token": csrf, "do": "explode" if "otto" in odd else "enable"}
        )
        assert 400 <= status < 500 and "<html" in page, odd
    assert (await _post(api, "/settings/users/pia", {"do": "enable"}))[0] == 403  # no CSRF token


async def test_the_secret_key_panel(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    await _login(api, Role.ADMIN)
    vault = load(api.ctx.settings)  # makes the key file
    row = dict(host="h", port=25, security="none", sender="a@b", password=vault.encrypt("p"))
    with api.ctx.sessions.begin() as s:
        s.add(SMTPRow(id=1, updated_at=utcnow(), **row))
    status, page = await _get(api, "/settings/users")
    current = secrets.fingerprint(vault.keys[0])
    assert status == 200 and "1 stored secret " in page and f"<code>{current}</code> (encrypts): 1" in page
    assert "All readable" in page and vault.keys[0].decode() not in page
    with api.ctx.sessions.begin() as s:
        s.get(SMTPRow, 1).password = Fernet(Fernet.generate_key()).encrypt(b"p").decode()  # type: ignore[union-attr]
    status, page = await _get(api, "/settings/users")
    assert status == 200 and "1 cannot be decrypted" in page and "the SMTP password" in page


async def test_keys_shown_once_and_revoked_by_name(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.OPERATOR)
    status, page = await _get(api, "/settings/keys")
    assert status == 200 and "No API key yet" in page and '<option value="admin"' not in page
    status, page = await _post(api, "/settings/keys", {"csrf_token": csrf, "name": "ci", "role": "admin"})
    assert status == 422 and "cannot carry admin" in page and 'value="ci"' in page
    status, page = await _post(
        api, "/settings/keys", {"csrf_token": csrf, "name": "ci", "expires_in_days": "x"}
    )
    assert status == 422 and 'id="expires_in_days-error"' in page
    status, page = await _post(api, "/settings/keys", {"csrf_token": csrf, "name": "ci", "role": "viewer"})
    found = re.search(r'id="minted-key" class="secret" readonly value="([^"]+)"', page)
    assert status == 201 and found and "only this once" in page
    secret = found[1]
    status, page = await _post(api, "/settings/keys", {"csrf_token": csrf, "name": "ci"})
    assert status == 422 and "exists already" in page and "data-minted" not in page
    status, page = await _get(api, "/settings/keys")
    assert status == 200 and "ci" in page and secret not in page and 'data-confirm-name="ci"' in page
    with api.ctx.sessions() as s:
        assert apikeys.verify(s, secret) is not None
        key_id = apikeys.list_keys(s, owner="otto")[0].id
    status, page = await _post(
        api, f"/settings/keys/{key_id}/revoke", {"csrf_token": csrf, "confirm_name": "c"}
    )
    assert status == 422 and "<html" in page
    status, _ = await _post(
        api, f"/settings/keys/{key_id}/revoke", {"csrf_token": csrf, "confirm_name": "ci", "owner": "ada"}
    )
    assert status == 403  # another user's key needs keys:admin
    status, _ = await _post(
        api, f"/settings/keys/{key_id}/revoke", {"csrf_token": csrf, "confirm_name": "ci"}
    )
    assert status == 303
    with api.ctx.sessions() as s:
        assert apikeys.list_keys(s, owner="otto")[0].revoked_at is not None
    status, page = await _get(api, "/settings/keys")
    assert "Revoked" in page and "Revoke key" not in page
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/settings/keys")
    assert "Owner" in page and "otto" in page


async def test_a_viewer_sees_no_controls_and_is_refused(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.VIEWER)
    status, page = await _get(api, "/settings/users")
    assert status == 403
    status, page = await _get(api, "/settings/keys")
    assert status == 200 and "Create key" in page  # their own keys: any logged-in user
    assert (
        'href="/settings/users"' not in page and 'href="/audit"' in page and 'href="/settings/keys"' in page
    )
    for path, data in (
        ("/settings/users", {"name": "eve", "role": "admin"}),
        ("/settings/users/vic", {"do": "role", "role": "admin"}),
    ):
        assert (await _post(api, path, {"csrf_token": csrf, **data}))[0] == 403
    assert (await _get(api, "/audit"))[0] == 200  # a viewer reads the audit log (audit:read)
    csrf = await _login(api, Role.OPERATOR)
    status, page = await _get(api, "/settings/users")
    assert status == 403  # users:read is the admin's only
    status, page = await _get(api, "/dashboard")
    assert 'href="/settings/users"' not in page and 'href="/settings/keys"' in page


async def test_audit_filters_paging_odd_values_and_the_chain(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    for n in range(3):
        await _post(api, "/settings/users", {"csrf_token": csrf, "name": f"u{n}", "role": "viewer"})
    status, page = await _get(api, "/audit?user=ada&action=POST")
    assert status == 200 and "The hash chain is intact (" in page and 'data-chain="intact"' in page
    assert page.count("/settings/users") >= 3 and "ada" in page
    assert 'href="/api/v1/audit?user=ada&amp;action=POST&amp;format=csv"' in page
    status, page = await _get(api, "/audit?user=ada&limit=2")
    nxt = re.search(r'href="(/audit\?[^"]*cursor=\d+)" rel="next"', page)
    assert status == 200 and nxt
    status, page2 = await _get(api, nxt[1].replace("&amp;", "&"))
    assert status == 200 and "Newest" in page2
    status, page = await _get(api, "/audit?user=nobody-at-all")
    assert status == 200 and "No record matches these filters" in page
    for odd in ("result=maybe", "since=yesterday", "since=2026-12-02&until=2026-12-01", "cursor=-1",
                "cursor=%C2%B2", "colour=red", "user=%00", "format=csv", "limit=0"):  # fmt: skip
        status, page = await _get(api, f"/audit?{odd}")
        assert 400 <= status < 500 and "<html" in page, (odd, status)


async def test_people_and_audit_in_the_browser(system: Callable[..., Awaitable[System]]) -> None:
    s = await system()
    page = await s.logged_in(Role.ADMIN)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto("/settings/users")
    await page.get_by_label("Name", exact=True).fill("nina")
    await page.get_by_label("Role", exact=True).select_option("operator")
    await page.get_by_role("button", name="Add user").click()
    await page.wait_for_url("**/settings/users")
    await expect(page.locator("#user-nina")).to_contain_text("operator")
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Name", exact=True).fill("backup-script")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("[data-minted]")).to_contain_text("only this once")
    secret = await page.locator("#minted-key").input_value()
    assert len(secret) > 20
    await page.goto("/settings/keys")
    await expect(page.get_by_role("cell", name="backup-script")).to_be_visible()
    assert secret not in await page.content()
    row = page.locator("tr", has_text="backup-script")
    await row.locator("summary", has_text="Revoke").click()
    button = row.get_by_role("button", name="Revoke key")
    await expect(button).to_be_disabled()
    await row.get_by_label("Type the key's name to confirm").fill("backup-scrip")
    await expect(button).to_be_disabled()
    await row.get_by_label("Type the key's name to confirm").fill("backup-script")
    await expect(button).to_be_enabled()
    await button.click()
    await page.wait_for_url("**/settings/keys")
    await expect(page.locator("tr", has_text="backup-script")).to_contain_text("Revoked")
    name = PEOPLE[Role.ADMIN][0]
    await page.goto(f"/audit?user={name}")
    await expect(page.locator("[data-chain]")).to_contain_text("intact")
    rows = page.locator("table.audit tbody tr")
    await expect(rows.filter(has_text="/settings/users").first).to_contain_text(name)
    await expect(rows.filter(has_text="/settings/keys").first).to_contain_text(name)
    await expect(rows.filter(has_text="revoke").first).to_contain_text("apikey:")
    await s.shot(page, "audit")
    assert not errors, errors
