"""The Settings pages over plain HTTP (rendering, access by role, validation with values kept and
secrets never echoed, remove refused while used) and in a real browser on the lab (a second
simulator added as a vCenter and tested, and a VM of its backed up by a job made in the form; an
SMTP channel's Send test failing inline)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from lab.launcher import Lab
from lab.model import DiskSpec, LabSpec, VMSpec
from shared.catalog import channels as chstore
from shared.catalog import jobs as jobstore
from shared.catalog import locations as locstore
from shared.catalog import vcenters as vcstore
from shared.model.access import Role
from shared.model.jobs import JobSpec
from shared.runtime.service import utcnow
from tests.gateway.conftest import Api, MakeApi
from tests.plugins.procs import free_port
from tests.ui.conftest import System
from tests.ui.test_jobs import _api, _get, _login, vm_box

SECRET = "hunter2-never-shown"


async def _post(api: Api, path: str, data: dict[str, Any]) -> tuple[int, str, str]:
    async with api.client.post(path, data=data, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


async def test_vcenters_add_edit_test_remove(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/settings")
    assert (
        status == 200 and 'href="/settings/vcenters"' in page and ">Settings</a>" in page.split("</nav>")[0]
    )
    status, page = await _get(api, "/settings/vcenters")
    assert status == 200 and "vc1" in page and "Read only here" in page and "Add a vCenter" in page
    assert "/settings/vcenters/vc1/edit" not in page  # configured: not editable

    form = {"csrf_token": csrf, "name": "vc2", "url": "https://127.0.0.1:9/sdk", "username": "bob",
            "password": SECRET, "verify_tls": "on", "hotadd_proxy": "proxy-vm"}  # fmt: skip
    status, page, _ = await _post(api, "/settings/vcenters", form)  # the test fails: nothing saved
    assert status == 422 and "<title>Error: " in page and 'role="alert"' in page
    assert "Connection test failed (tcp)" in page and 'aria-invalid="true"' in page
    assert 'value="bob"' in page and 'value="proxy-vm"' in page and SECRET not in page
    status, page, _ = await _post(api, "/settings/vcenters", form | {"name": "vc1", "skip_test": "on"})
    assert status == 422 and "configured" in page and SECRET not in page
    status, page, _ = await _post(api, "/settings/vcenters", form | {"url": "", "skip_test": "on"})
    assert status == 422 and 'aria-describedby="url-error"' in page and SECRET not in page
    status, _, where = await _post(api, "/settings/vcenters", form | {"skip_test": "on"})
    assert status == 303 and where == "/settings/vcenters"
    status, page = await _get(api, "/settings/vcenters")
    assert "vc2" in page and "/settings/vcenters/vc2/edit" in page and SECRET not in page

    status, page = await _get(api, "/settings/vcenters/vc2/edit")
    assert status == 200 and 'value="bob"' in page and "type a new one to replace it" in page
    assert SECRET not in page
    edit = {"csrf_token": csrf, "url": "https://127.0.0.1:9/sdk", "username": "carol", "password": "",
            "skip_test": "on"}  # fmt: skip
    status, _, where = await _post(api, "/settings/vcenters/vc2/edit", edit)
    assert status == 303
    status, page, _ = await _post(
        api, "/settings/vcenters/vc2/edit", edit | {"url": "ftp://x", "skip_test": ""}
    )
    assert status == 422 and "<title>Error: " in page and 'value="ftp://x"' in page
    with api.ctx.sessions() as s:
        assert vcstore.get_view(s, api.ctx.settings, "vc2")["username"] == "carol"

    async with api.client.post("/settings/vcenters/vc2/test", data={"csrf_token": csrf},
                               headers={"HX-Request": "true"}) as resp:  # fmt: skip
        assert resp.status == 200 and "Failed at tcp" in await resp.text()
    status, page, _ = await _post(api, "/settings/vcenters/vc2/test", {"csrf_token": csrf})  # without htmx
    assert status == 200 and "Failed at tcp" in page and "<html" in page

    with api.ctx.sessions.begin() as s:
        spec = {"name": "uses-vc2", "vcenter": "vc2", "select": [{"folder": "prod"}],
                "schedule": {"kind": "preset", "preset": "daily", "at": "02:30"}}  # fmt: skip
        job_id = jobstore.create_job(s, JobSpec.model_validate(spec), utcnow(), "/tmp/repo").id
    status, page, _ = await _post(
        api, "/settings/vcenters/vc2/delete", {"csrf_token": csrf, "confirm_name": "vc2"}
    )
    assert status == 409 and "uses-vc2" in page and "Nothing was removed" in page
    with api.ctx.sessions.begin() as s:
        jobstore.delete_job(s, job_id)
    status, page, _ = await _post(
        api, "/settings/vcenters/vc2/delete", {"csrf_token": csrf, "confirm_name": "vc"}
    )
    assert status == 422
    status, _, where = await _post(
        api, "/settings/vcenters/vc2/delete", {"csrf_token": csrf, "confirm_name": "vc2"}
    )
    assert status == 303
    for odd in ("/settings/vcenters/nope/edit", "/settings/vcenters/vc1/edit", "/settings/vcenters/%00/edit"):
        status, page = await _get(api, odd)
        assert 400 <= status < 500 and "<html" in page, (odd, status)


async def test_vcenters_by_role(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    for role in (Role.VIEWER, Role.OPERATOR):
        csrf = await _login(api, role)
        status, page = await _get(api, "/settings/vcenters")
        assert status == 200 and "vc1" in page
        assert "Add a vCenter" not in page and "Test connection" not in page
        assert ">Settings</a>" not in page.split("</nav>")[0]  # the navigation's entry is for admins
        for path in ("/settings/vcenters", "/settings/vcenters/vc1/test", "/settings/vcenters/vc1/delete",
                     "/settings/vcenters/vc1/edit"):  # fmt: skip
            status, _, _ = await _post(api, path, {"csrf_token": csrf, "name": "x", "confirm_name": "vc1"})
            assert status == 403, (role, path)
        status, _ = await _get(api, "/settings/vcenters/vc1/edit")
        assert status == 403


async def test_notifications_channels_and_smtp(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/settings/notifications")
    assert status == 200 and "No channel yet" in page and "No SMTP server" in page

    hook = "https://hooks.example.com/" + SECRET
    form = {"csrf_token": csrf, "name": "ops hook", "type": "webhook", "url": hook, "secret": SECRET,
            "on": ["failure"], "scope": "all"}  # fmt: skip
    status, page, _ = await _post(api, "/settings/notifications/channels", form)  # a bad name
    assert status == 422 and "<title>Error: " in page and 'aria-describedby="name-error"' in page
    assert 'value="ops hook"' in page and SECRET not in page
    status, page, _ = await _post(api, "/settings/notifications/channels", form | {"name": "ops", "url": ""})
    assert status == 422 and 'aria-describedby="url-error"' in page and SECRET not in page
    status, _, where = await _post(api, "/settings/notifications/channels", form | {"name": "ops"})
    assert status == 303 and where == "/settings/notifications"
    mail = {"csrf_token": csrf, "name": "mail", "type": "email", "to": "a@example.com, b@example.com",
            "on": ["failure", "warning"], "scope": "all"}  # fmt: skip
    status, _, _ = await _post(api, "/settings/notifications/channels", mail)
    assert status == 303
    status, page = await _get(api, "/settings/notifications")
    assert "ops" in page and "a@example.com, b@example.com" in page and "Send test" in page
    assert SECRET not in page and "hooks.example.com" in page

    status, page = await _get(api, "/settings/notifications/channels/ops/edit")
    assert status == 200 and "type a new one to replace it" in page and SECRET not in page
    edit = {"csrf_token": csrf, "type": "webhook", "on": ["failure", "success"], "scope": "jobs"}
    status, _, _ = await _post(api, "/settings/notifications/channels/ops/edit", edit)
    assert status == 303
    with api.ctx.sessions() as s:
        view = chstore.get_view(s, api.ctx.settings, "ops")
        assert view["on"] == ["failure", "success"] and view["url"] == "set" and view["secret"] == "set"
    status, page, _ = await _post(
        api, "/settings/notifications/channels/mail/edit", edit | {"type": "email", "to": ""}
    )
    assert status == 422 and "<title>Error: " in page

    smtp = {"csrf_token": csrf, "host": "127.0.0.1", "port": "99999", "security": "none", "username": "u",
            "password": SECRET, "sender": "vbm@example.com", "ca_file": ""}  # fmt: skip
    status, page, _ = await _post(api, "/settings/notifications/smtp", smtp)
    assert status == 422 and 'aria-describedby="port-error"' in page and 'value="99999"' in page
    assert SECRET not in page
    status, _, _ = await _post(api, "/settings/notifications/smtp", smtp | {"port": "9"})
    assert status == 303
    status, page = await _get(api, "/settings/notifications")
    assert "127.0.0.1:9 (none)" in page and "password set" in page and SECRET not in page

    async with api.client.post("/settings/notifications/test", data={"csrf_token": csrf, "channel": "mail"},
                               headers={"HX-Request": "true"}) as resp:  # fmt: skip
        text = await resp.text()
        assert resp.status == 200 and 'data-tested="failed"' in text, text
    status, page, _ = await _post(
        api, "/settings/notifications/test", {"csrf_token": csrf, "channel": "mail"}
    )
    assert status == 200 and 'data-tested="failed"' in page and "<html" in page

    with api.ctx.sessions.begin() as s:
        spec = {"name": "tells-ops", "vcenter": "vc1", "select": [{"folder": "prod"}],
                "schedule": {"kind": "preset", "preset": "daily", "at": "02:30"},
                "options": {"notify": {"channels": ["ops"]}}}  # fmt: skip
        jobstore.create_job(s, JobSpec.model_validate(spec), utcnow(), "/tmp/repo")
    status, page, _ = await _post(
        api, "/settings/notifications/channels/ops/delete", {"csrf_token": csrf, "confirm_name": "ops"}
    )
    assert status == 409 and "tells-ops" in page and "Nothing was removed" in page
    status, _, _ = await _post(
        api, "/settings/notifications/channels/mail/delete", {"csrf_token": csrf, "confirm_name": "mail"}
    )
    assert status == 303
    status, _, _ = await _post(api, "/settings/notifications/smtp/delete", {"csrf_token": csrf})
    assert status == 303

    for role in (Role.VIEWER, Role.OPERATOR):
        csrf = await _login(api, role)
        status, page = await _get(api, "/settings/notifications")
        assert status == 200 and "ops" in page and "Add a channel" not in page and "Save SMTP" not in page
        assert "Send test" not in page and "/edit" not in page
        for path in ("/settings/notifications/channels", "/settings/notifications/channels/ops/edit",
                     "/settings/notifications/channels/ops/delete", "/settings/notifications/smtp",
                     "/settings/notifications/smtp/delete", "/settings/notifications/test"):  # fmt: skip
            status, _, _ = await _post(api, path, {"csrf_token": csrf, "name": "x", "channel": "ops"})
            assert status == 403, (role, path)


async def test_repositories(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/settings/repositories")
    assert status == 200 and "default" in page and "Read only here" in page and "Add a location" in page
    assert "/settings/repositories/default/edit" not in page

    form = {"csrf_token": csrf, "name": "offsite", "url": "sftp://backup@127.0.0.1:9/vbm", "password": SECRET,
            "known_hosts": "", "access_key": ""}  # fmt: skip
    status, page, _ = await _post(api, "/settings/repositories", form)  # opened first: nobody answers
    assert status == 422 and "<title>Error: " in page and "cannot be opened with these credentials" in page
    assert (
        'value="sftp://backup@127.0.0.1:9/vbm"' in page and 'value="offsite"' in page and SECRET not in page
    )
    status, page, _ = await _post(api, "/settings/repositories", form | {"url": "ftp://x", "skip_test": "on"})
    assert status == 422 and 'aria-describedby="url-error"' in page and SECRET not in page
    status, page, _ = await _post(
        api, "/settings/repositories", form | {"access_key": "AK", "skip_test": "on"}
    )
    assert status == 422 and 'aria-describedby="access_key-error"' in page
    status, _, where = await _post(api, "/settings/repositories", form | {"skip_test": "on"})
    assert status == 303 and where == "/settings/repositories"
    local = tmp_path / "second"
    status, _, _ = await _post(
        api, "/settings/repositories", {"csrf_token": csrf, "name": "second", "url": str(local)}
    )
    assert status == 303  # an empty local directory opens (the first backup makes a repository)
    status, page = await _get(api, "/settings/repositories")
    assert "offsite" in page and "SFTP password: set" in page and SECRET not in page and "second" in page

    status, page = await _get(api, "/settings/repositories/offsite/edit")
    assert status == 200 and "type a new one to replace it" in page and SECRET not in page
    edit = {"csrf_token": csrf, "url": "sftp://other@127.0.0.1:9/vbm", "skip_test": "on"}
    status, _, _ = await _post(api, "/settings/repositories/offsite/edit", edit)
    assert status == 303
    with api.ctx.sessions() as s:
        view = locstore.get_view(s, api.ctx.settings, "offsite")
        assert view["url"] == "sftp://other@127.0.0.1:9/vbm" and view["password"] == "set"
    status, page, _ = await _post(api, "/settings/repositories/offsite/edit", edit | {"skip_test": ""})
    assert status == 422 and 'value="sftp://other@127.0.0.1:9/vbm"' in page

    with api.ctx.sessions.begin() as s:
        spec = {"name": "to-second", "vcenter": "vc1", "select": [{"folder": "prod"}],
                "schedule": {"kind": "preset", "preset": "daily", "at": "02:30"}}  # fmt: skip
        jobstore.create_job(s, JobSpec.model_validate(spec), utcnow(), str(local))
    status, page, _ = await _post(
        api, "/settings/repositories/second/delete", {"csrf_token": csrf, "confirm_name": "second"}
    )
    assert status == 409 and "to-second" in page and "Nothing was removed" in page
    status, _, _ = await _post(
        api, "/settings/repositories/offsite/delete", {"csrf_token": csrf, "confirm_name": "offsite"}
    )
    assert status == 303
    for odd in ("/settings/repositories/default/edit", "/settings/repositories/nope/edit"):
        status, page = await _get(api, odd)
        assert 400 <= status < 500 and "<html" in page, (odd, status)

    for role in (Role.VIEWER, Role.OPERATOR):
        csrf = await _login(api, role)
        status, page = await _get(api, "/settings/repositories")
        assert status == 200 and "second" in page and "Add a location" not in page and "/edit" not in page
        for path in ("/settings/repositories", "/settings/repositories/second/edit",
                     "/settings/repositories/second/delete"):  # fmt: skip
            status, _, _ = await _post(api, path, {"csrf_token": csrf, "name": "x", "confirm_name": "second"})
            assert status == 403, (role, path)


async def test_add_a_second_vcenter_back_up_from_it_and_a_failing_mail_channel_in_the_browser(
    system: Callable[..., Awaitable[System]], lab_factory: Callable[[LabSpec], Lab]
) -> None:
    s = await system()
    # a second simulator: another vCenter with a VM of its own, known to vbm only once added here
    lab = lab_factory(LabSpec(vms=(VMSpec("far", (DiskSpec(3 * 1024 * 1024 + 3072, seed=41),), cbt=True),)))
    page = await s.logged_in(Role.ADMIN)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    await s.shot(page, "settings")
    await page.get_by_role("link", name="vCenters").click()
    await page.wait_for_url("**/settings/vcenters")
    # the second vCenter, tested before it is saved
    await page.locator("#name").fill("lab2")
    await page.locator("#url").fill(lab.sdk_url)
    await page.locator("#username").fill(lab.username)
    await page.locator("#password").fill(lab.password)
    await page.locator("#verify_tls").uncheck()
    await page.get_by_role("button", name="Test and add").click()
    row = page.locator("#vc-lab2")
    await expect(row).to_contain_text("added")
    await row.get_by_role("button", name="Test connection").click()
    await expect(row.get_by_role("status")).to_contain_text("Connected", timeout=15_000)
    await expect(page.locator("#password")).to_have_value("")  # write-only: never sent back
    await s.shot(page, "settings-vcenters")

    # a job for the second vCenter's VM, made in the form and run: its backup comes from lab2
    await page.goto("/jobs/new")
    await page.get_by_label("Name", exact=True).fill("far-nightly")
    await page.get_by_label("vCenter", exact=True).select_option("lab2")
    await vm_box(page, "far").check()
    await page.locator("#repository").select_option(index=1)
    await page.get_by_role("button", name="Create job").click()
    await page.wait_for_url("**/jobs")
    row = page.locator("tr", has_text="far-nightly")
    await row.get_by_role("button", name="Run now").click()
    await page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    await expect(page.locator("#state-h .badge")).to_have_text("Succeeded", timeout=60_000)
    status, points = await s.api.call("GET", "/backups", params={"vm": "far"})
    assert status == 200, points
    assert [(p["vcenter"], p["vm_name"]) for p in points["backups"]] == [("lab2", "far")], points
    assert lab.snapshots("far") == []  # none left behind on the second vCenter either
    await page.goto("/audit?user=ada")  # each step with who did it
    rows = page.locator("table.audit tbody tr")
    for path in ("/settings/vcenters", "/jobs/new"):
        await expect(rows.filter(has_text=path).first).to_contain_text("ada")
    await expect(rows.filter(has_text="/run").first).to_contain_text("ada")

    await page.goto("/settings/notifications")
    await page.locator("#host").fill("127.0.0.1")
    await page.locator("#port").fill(str(free_port()))  # nothing listens there: the server refuses
    await page.locator("#security").select_option("none")
    await page.locator("#sender").fill("vbm@example.com")
    await page.get_by_role("button", name="Save SMTP server").click()
    await expect(page.get_by_text("127.0.0.1:")).to_be_visible()
    await page.locator("#name").fill("mail")
    await page.locator("#to").fill("ops@example.com")
    await page.get_by_role("button", name="Add channel").click()
    row = page.locator("#ch-mail")
    await row.get_by_role("button", name="Send test").click()
    await expect(row.locator("[data-tested=failed]")).to_be_visible(timeout=12_000)
    await expect(row.locator(".tested-error")).to_contain_text(re.compile("refused|Errno", re.I))
    assert errors == [], errors
