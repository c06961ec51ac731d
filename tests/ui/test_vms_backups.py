"""The VMs and Backups pages: over HTTP with seeded restore points (rendering, filters, access,
odd input), and in a real browser against vbm on the lab (a backup's restore point on every
page, Verify's result arriving live, the VMs search and its filters in the URL)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp.test_utils import TestClient
from playwright.async_api import Page, expect

from shared.catalog import jobs as jobstore
from shared.catalog import users
from shared.db.models import Replication, RestorePointRow
from shared.model.access import Role
from shared.model.jobs import JobSpec
from shared.model.selection import VMRef
from shared.runtime.service import utcnow
from shared.settings import VCenterSettings
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi
from tests.ui.conftest import System, log_in

HTML = {"Accept": "text/html"}
T0 = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
PEOPLE = {Role.ADMIN: "ada", Role.OPERATOR: "otto", Role.VIEWER: "vic"}
PASSWORD = "a long enough pass 7"
DOWN = VCenterSettings(
    name="far", url="https://127.0.0.1:9/sdk", username="u", password="p", verify_tls=False
)


async def _log_in(c: TestClient, role: Role) -> str:
    """Log `c` in as the user of `role` (logging out whoever was in); the CSRF token."""
    return await log_in(c, PEOPLE[role], PASSWORD)


async def _seeded(make_api: MakeApi, tmp_path: Path) -> Api:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", vcenters=(DOWN,))
    now = utcnow()
    with api.ctx.sessions.begin() as s:
        for role, name in PEOPLE.items():
            users.add(s, name, role, now, SecuritySettings(), PASSWORD)
        job = jobstore.create_job(
            s, JobSpec(name="nightly", vcenter="far", vms=(VMRef(moref="vm-1"),)), now, "/r"
        )
        for i in range(3):
            s.add(
                RestorePointRow(
                    id=f"rp-{i}", job_id=job.id, vcenter="far", vm_moref="vm-1", vm_name="web-1",
                    repository=str(tmp_path / "nowhere"), kind="incremental" if i else "full",
                    disks=[{"key": 2000, "capacity": 1 << 30}], logical_bytes=(1 << 30) + i,
                    bytes_read=(1 << 20) * (i + 1), bytes_stored=1 << 20,
                    started_at=T0 + timedelta(hours=i), finished_at=T0 + timedelta(hours=i, minutes=5),
                    verify_state="ok" if i == 1 else "pending", verify_problems=[], pinned=i == 2,
                )
            )  # fmt: skip
        s.add(
            Replication(
                id="rep-1", restore_point_id="rp-2", target="/second", state="done", created_at=T0,
                updated_at=T0,
            )
        )  # fmt: skip
    return api


async def test_pages_render_filter_and_refuse(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _seeded(make_api, tmp_path)
    c = api.client
    csrf = await _log_in(c, Role.VIEWER)

    async with c.get("/vms") as resp:  # the one vCenter is down: said in a banner, not a blank page
        page = await resp.text()
        assert resp.status == 200, page
        assert "could not be asked" in page and "far" in page and "Refresh" in page
    async with c.get(
        "/vms?protected=no&q=web", headers={"HX-Request": "true", "HX-Target": "vm-rows"}
    ) as resp:
        fragment = await resp.text()
        assert resp.status == 200 and fragment.startswith('<tbody id="vm-rows">') and "<html" not in fragment
        assert 'hx-swap-oob="true"' in fragment
    for odd in ("protected=maybe", "sort=ram;drop", "colour=red", "state=great", "order=up"):
        async with c.get(f"/vms?{odd}", headers=HTML) as resp:
            assert resp.status in (400, 422), (odd, resp.status)
            assert "<title>" in await resp.text()

    async with c.get("/backups") as resp:
        page = await resp.text()
        assert resp.status == 200 and "3 restore points" in page
        for shown in ("web-1", "nightly", "incremental", "Verified", "Pinned", "1 of 1", "By VM: 1 VM"):
            assert shown in page, shown
    async with c.get("/backups?verify=ok") as resp:
        page = await resp.text()
        assert "1 restore point." in page and "/backups/rp-1" in page and "/backups/rp-0" not in page
    async with c.get("/backups?limit=2") as resp:
        page = await resp.text()
        nxt = re.search(r'href="/backups\?([^"]*cursor=[^"]+)" rel="next"', page)
        assert nxt, page
    async with c.get("/backups?" + nxt[1].replace("&amp;", "&")) as resp:
        page = await resp.text()
        assert "/backups/rp-0" in page and "/backups/rp-2" not in page and "First page" in page
    for odd in ("limit=0", "cursor=zzz", "verify=great", "since=yesterday", "colour=red"):
        async with c.get(f"/backups?{odd}", headers=HTML) as resp:
            assert resp.status in (400, 422), (odd, resp.status)

    async with c.get("/backups/rp-2") as resp:  # a viewer: no Verify, Pin or Download
        page = await resp.text()
        assert resp.status == 200, page
        assert "The manifest cannot be read" in page and "Immutable" in page and "/second" in page
        assert "Verify now" not in page and ">Unpin<" not in page and "Download" not in page
    async with c.get("/backups/rp-nope", headers=HTML) as resp:
        assert resp.status == 404 and "rp-nope" in await resp.text()
    async with c.get("/vms/far/vm-1") as resp:  # its vCenter is down: the restore points still show
        page = await resp.text()
        assert resp.status == 200 and "web-1" in page and "/backups/rp-0" in page
    async with c.get("/vms/far/vm-404", headers=HTML) as resp:
        assert resp.status == 404
    for path in ("/backups/rp-2/verify", "/backups/rp-2/pin"):  # forged posts: refused
        async with c.post(path, data={"csrf_token": csrf}) as resp:
            assert resp.status == 403, path

    csrf = await _log_in(c, Role.OPERATOR)  # verifies and downloads; pinning is an admin's
    async with c.get("/backups/rp-2") as resp:
        page = await resp.text()
        assert "Verify now" in page and "Download" in page and ">Unpin<" not in page
    async with c.get("/api/v1/backups/rp-2/disks/2000") as resp:  # the link works with the session
        assert resp.status == 503 and "nowhere" in await resp.text()
    async with c.post("/backups/rp-2/pin", data={"csrf_token": csrf}) as resp:
        assert resp.status == 403
    async with c.post("/backups/rp-2/verify", data={"csrf_token": csrf}, allow_redirects=False) as r:
        assert r.status == 303
    headers = {"HX-Request": "true", "Idempotency-Key": "ui-verify-test1"}
    for _ in range(2):  # a double click: one request
        async with c.post("/backups/rp-1/verify", data={"csrf_token": csrf}, headers=headers) as r:
            fragment = await r.text()
            assert r.status == 200 and 'hx-trigger="every 2s"' in fragment and "Verifying" in fragment
    async with c.post("/backups/rp-nope/verify", data={"csrf_token": csrf}, headers=HTML) as r:
        assert r.status == 404

    csrf = await _log_in(c, Role.ADMIN)
    async with c.get("/backups/rp-2") as resp:
        assert ">Unpin<" in await resp.text()
    async with c.post(
        "/backups/rp-2/pin", data={"csrf_token": csrf, "pinned": "false"}, allow_redirects=False
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/backups/rp-2"
    async with c.post("/backups/rp-2/pin", data={"csrf_token": csrf, "pinned": "perhaps"}, headers=HTML) as r:
        assert r.status in (400, 422)
    with api.ctx.sessions.begin() as s:
        assert s.get(RestorePointRow, "rp-2").pinned is False  # type: ignore[union-attr]
        rp = s.get(RestorePointRow, "rp-1")
        assert rp is not None and rp.verify_requested_at is not None
        rp.verified_at, rp.verify_state = rp.verify_requested_at + timedelta(seconds=1), "failed"
        rp.verify_problems = ["chunk 7 of disk 2000 is damaged"]
    async with c.get("/backups/rp-1/verification") as resp:  # landed: the polling stops
        fragment = await resp.text()
        assert "every 2s" not in fragment and "Verify failed" in fragment and "chunk 7" in fragment
    async with c.get("/backups/rp-2") as resp:
        assert ">Pin<" in await resp.text()
    async with c.post(
        "/vms/refresh", data={"csrf_token": csrf, "back": "protected=no&evil=1"}, allow_redirects=False
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/vms?protected=no"


def _console_errors(page: Page) -> list[str]:
    """The page's console errors from now on (a script or CSP error fails the test)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


async def _no_reload_marker(page: Page) -> None:
    await page.evaluate("window.vbmSamePage = true")


async def _same_page(page: Page) -> bool:
    return bool(await page.evaluate("window.vbmSamePage === true"))


async def test_a_backup_shows_on_every_page_and_verifies_live(
    system: Callable[..., Awaitable[System]],
) -> None:
    s = await system()
    job_id = s.pipeline.create_job("nightly", ["web"])
    status, started = await s.api.call("POST", f"/jobs/{job_id}/run")
    assert status == 202, started
    run = await s.pipeline.wait_run(started["run_id"])
    assert run.state == "succeeded", s.pipeline.dump(run.id)

    page = await s.logged_in(Role.ADMIN)
    errors = _console_errors(page)
    await page.goto("/vms")
    web = page.locator("#vm-rows tr", has_text="web")
    await expect(web).to_contain_text("Succeeded")
    await expect(web).to_contain_text("nightly")
    await expect(page.locator("#vm-rows tr", has_text="db")).to_contain_text("Unprotected")
    await s.shot(page, "vms")
    await web.get_by_role("link", name="web").click()  # the VM's page: its jobs and restore points
    await expect(page.get_by_role("heading", name="web")).to_be_visible()
    await expect(page.locator("section", has_text="Protected by")).to_contain_text("nightly")
    await expect(page.locator("table.points tbody tr")).to_have_count(1)
    await s.shot(page, "vm-detail")

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Backups").click()
    await expect(page.get_by_role("heading", name="Backups")).to_be_visible()
    row = page.locator("table.points tbody tr", has_text="web")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("nightly")
    await s.shot(page, "backups")
    await row.get_by_role("link").first.click()
    await expect(page.get_by_role("heading", name="Manifest")).to_be_visible()
    digests = await page.locator("code.digest").all_inner_texts()
    assert digests and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests), digests

    await _no_reload_marker(page)
    await page.get_by_role("button", name="Verify now").click()
    panel = page.locator("#verify-panel")
    await expect(panel).to_contain_text("Verifying")  # the button's answer: the panel that polls
    await expect(panel).to_contain_text("Verified", timeout=30_000)
    assert await _same_page(page)  # the result arrived without a reload
    await expect(panel.get_by_role("button", name="Verify now")).to_be_visible()
    await s.shot(page, "backup-detail")
    assert errors == [], errors


async def test_vms_search_and_filters_in_the_url(system: Callable[..., Awaitable[System]]) -> None:
    s = await system()
    s.pipeline.create_job("nightly", ["web"])
    page = await s.logged_in(Role.VIEWER)
    errors = _console_errors(page)
    await page.goto("/vms")
    rows = page.locator("#vm-rows tr")
    await expect(rows).to_have_count(2)
    await _no_reload_marker(page)
    await page.get_by_label("Search").fill("we")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("web")
    await expect(page.locator("#vm-count")).to_contain_text("1 of 2 VMs")
    assert await _same_page(page) and "q=we" in page.url  # swapped in place, the search in the URL
    await page.get_by_label("Search").fill("")
    await expect(rows).to_have_count(2)
    await page.get_by_label("Protection").select_option("no")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("db")
    assert await _same_page(page)
    await page.wait_for_url("**/vms?*protected=no*")
    await page.reload()
    await expect(page.get_by_label("Protection")).to_have_value("no")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("Unprotected")
    assert errors == [], errors
