"""The Jobs pages: over plain HTTP (rendering, access by role, validation, odd input, a stale
edit) and in a real browser on the lab (creating a job through the form; a viewer's view)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import Locator, Page, expect
from pydantic import SecretStr

from shared.catalog import jobs as jobstore
from shared.db.models import RestorePointRow
from shared.model.access import Role
from shared.model.jobs import JobSpec
from shared.runtime.service import utcnow
from shared.settings import VCenterSettings
from tests.gateway.conftest import Api, MakeApi
from tests.ui.conftest import PEOPLE, System, add_people, log_in

T0 = datetime(2026, 11, 20, 2, tzinfo=UTC)
# A vCenter nobody answers at: jobs that select VMs by folder need not ask it to be saved.
VC = VCenterSettings(name="vc1", url="https://127.0.0.1:9/sdk", username="u", password=SecretStr("p"))


async def _api(make_api: MakeApi, tmp_path: Path) -> Api:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", vcenters=(VC,))
    add_people(api)
    return api


async def _login(api: Api, role: Role) -> str:
    """Log in as the user of `role` (the client's cookies replaced); the session's CSRF token."""
    return await log_in(api.client, *PEOPLE[role], "/jobs")


def _job(api: Api, name: str = "nightly", **changes: Any) -> dict[str, Any]:
    body = {"name": name, "vcenter": "vc1", "select": [{"folder": "prod"}],
            "schedule": {"kind": "preset", "preset": "daily", "at": "02:30"}} | changes  # fmt: skip
    with api.ctx.sessions.begin() as s:
        job = jobstore.create_job(s, JobSpec.model_validate(body), utcnow(), "/tmp/repo")
        return jobstore.job_view(job)


async def _get(api: Api, path: str) -> tuple[int, str]:
    async with api.client.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text()


FORM = {"name": "weekly-web", "vcenter": "vc1", "folders": "prod/web", "schedule_kind": "preset",
        "preset": "weekly", "at": "03:15", "timezone": "Europe/Berlin", "every_unit": "hours",
        "keep_daily": "7", "repository": "/tmp/repo", "enabled": "on"}  # fmt: skip


async def test_list_and_actions_by_role(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/jobs")
    assert (
        status == 200 and "No jobs yet. Create a job to protect a VM." in page and 'href="/jobs/new"' in page
    )
    job = _job(api)
    _job(api, "off-one", enabled=False, retention={"keep_last": 3})
    status, page = await _get(api, "/jobs")
    assert status == 200 and "Daily at 02:30 (UTC)" in page and "Never run" in page
    assert 'class="next-run" datetime="' in page and "keeps the last 3" in page
    assert "Run now" in page and "Edit" in page and 'data-confirm-name="nightly"' in page
    status, page = await _get(api, "/jobs?enabled=no")
    assert "off-one" in page and "nightly" not in page and 'aria-current="true">Disabled' in page
    for odd in ("/jobs?enabled=maybe", "/jobs?result=%00", "/jobs?colour=red", "/jobs/no-such/edit"):
        status, page = await _get(api, odd)
        assert 400 <= status < 500 and "<html" in page, (odd, status)

    back = "/jobs?enabled=yes"
    async with api.client.post(f"/jobs/{job['id']}/disable", data={"csrf_token": csrf, "back": back},
                               allow_redirects=False) as resp:  # fmt: skip
        assert resp.status == 303 and resp.headers["Location"] == back
    with api.ctx.sessions() as s:
        assert jobstore.find_job(s, job["id"]).enabled is False
    data = {"csrf_token": csrf, "confirm_name": "nightl"}
    async with api.client.post(f"/jobs/{job['id']}/delete", data=data) as resp:
        assert resp.status == 422 and "Nothing was deleted" in await resp.text()
    async with api.client.post(
        f"/jobs/{job['id']}/run", data={"csrf_token": csrf}, allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith(f"/runs/{job['id']}-m")
        run_id = resp.headers["Location"].removeprefix("/runs/")
    async with api.client.post(f"/jobs/{job['id']}/run", data={"csrf_token": csrf}) as resp:
        page = await resp.text()
        assert (
            resp.status == 409
            and f'href="/runs/{run_id}"' in page
            and "Error: Job nightly is running" in page
        )
    status, page = await _get(api, "/jobs?result=running")
    assert status == 200 and "Cancel" in page and "off-one" not in page
    async with api.client.post(
        f"/jobs/{job['id']}/cancel", data={"csrf_token": csrf}, allow_redirects=False
    ) as r:
        assert r.status == 303
    data = {"csrf_token": csrf, "confirm_name": "nightly", "force": "on"}
    async with api.client.post(f"/jobs/{job['id']}/delete", data=data, allow_redirects=False) as resp:
        assert resp.status == 303
    with api.ctx.sessions() as s:
        assert [j.name for j in jobstore.list_jobs(s)] == ["off-one"]

    viewer_csrf = await _login(api, Role.VIEWER)
    status, page = await _get(api, "/jobs")
    assert status == 200 and "off-one" in page
    for control in ("Run now", ">Edit<", "Delete", ">Disable<", ">Enable<", "Create job", "/jobs/new"):
        assert control not in page, control
    other = _job(api, "third")
    for action in ("run", "cancel", "enable", "disable", "delete"):
        async with api.client.post(f"/jobs/{other['id']}/{action}", data={"csrf_token": viewer_csrf}) as resp:
            assert resp.status == 403, action
    assert (await _get(api, "/jobs/new"))[0] == 403
    await _login(api, Role.OPERATOR)
    status, page = await _get(api, "/jobs")
    assert "Run now" in page and ">Edit<" not in page and "Delete" not in page


async def test_form_validates_saves_and_refuses_a_stale_edit(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/jobs/new")
    assert status == 200 and "<title>Create job" in page and "vc1 cannot be asked now" in page

    sent = {**FORM, "csrf_token": csrf, "repository": "", "keep_weekly": "many", "name": "web night"}
    async with api.client.post("/jobs/new", data=sent) as resp:
        page = await resp.text()
    assert resp.status == 422 and "<title>Error: Create job" in page
    summary = page[
        page.index('class="error-summary"') : page.index("</div>", page.index('class="error-summary"'))
    ]
    assert 'role="alert"' in summary and "data-autofocus" in summary
    assert summary.index('href="#keep_weekly"') < summary.index('href="#repository"')
    invalid = 'aria-invalid="true" aria-describedby="repository-error"'
    assert f'<select id="repository" name="repository" {invalid}' in page
    assert (
        'value="web night"' in page and 'value="Europe/Berlin"' in page and 'value="prod/web" checked' in page
    )

    bad = (("cron", "61 * * * *"), ("timezone", "Mars/Base"), ("name", "!bad"), ("at", "25:00"))
    bad += (("repository", "/tmp/\x00"),)
    for field, value in bad:
        wanted = f'href="#{field}"'
        data = {**FORM, "csrf_token": csrf, field: value} | (
            {"schedule_kind": "cron"} if field == "cron" else {}
        )
        async with api.client.post("/jobs/new", data=data) as resp:
            assert resp.status == 422 and wanted in await resp.text(), field

    async with api.client.post("/jobs/new", data={**FORM, "csrf_token": csrf}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/jobs"
    with api.ctx.sessions() as s:
        job = jobstore.job_view(jobstore.find_job(s, "weekly-web"))
    assert job["select"] == [{"folder": "prod/web"}] and job["retention"] == {"keep_daily": 7}
    assert job["schedule"] == {
        "kind": "preset",
        "preset": "weekly",
        "at": "03:15",
        "timezone": "Europe/Berlin",
    }
    async with api.client.post("/jobs/new", data={**FORM, "csrf_token": csrf}) as resp:  # the name is taken
        assert resp.status == 422 and "exists already" in await resp.text()

    status, page = await _get(api, f"/jobs/{job['id']}/edit")
    assert status == 200
    version = re.search(r'name="version" id="version" value="([^"]*)"', page)
    assert version and "The next 5 runs (Europe/Berlin)" in page
    edit = {**FORM, "csrf_token": csrf, "version": version[1].replace("&#34;", '"'), "keep_daily": "3"}
    async with api.client.post(f"/jobs/{job['id']}/edit", data=edit, allow_redirects=False) as resp:
        assert resp.status == 303
    async with api.client.post(f"/jobs/{job['id']}/edit", data={**edit, "keep_daily": "9"}) as resp:  # stale
        page = await resp.text()
        assert resp.status == 412 and "Someone changed job weekly-web" in page and 'value="9"' in page
        assert f'href="/jobs/{job["id"]}/edit"' in page
    with api.ctx.sessions() as s:
        assert jobstore.find_job(s, job["id"]).retention == {"keep_daily": 3}


async def test_fragments(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _api(make_api, tmp_path)
    await _login(api, Role.VIEWER)
    status, page = await _get(
        api, "/jobs/form/times?schedule_kind=preset&preset=monthly&at=01:00&timezone=Asia/Tokyo"
    )
    assert status == 200 and page.count("<li>") == 5 and "01:00 Asia/Tokyo" in page and "<html" not in page
    status, page = await _get(api, "/jobs/form/times?schedule_kind=interval&every=90&every_unit=minutes")
    assert status == 200 and page.count("<li>") == 5
    assert (await _get(api, "/jobs/form/times?schedule_kind=cron&cron=%00"))[0] == 422  # a NUL: refused
    odd_ones = ("schedule_kind=cron&cron=0+0+30+2+*", "schedule_kind=zzz")
    odd_ones += ("schedule_kind=interval&every=-1", "schedule_kind=preset&preset=hourly", "timezone=..%2F")
    for odd in odd_ones:
        status, page = await _get(api, f"/jobs/form/times?{odd}")
        assert status == 200 and 'class="field-error"' in page, odd
    status, page = await _get(api, "/jobs/form/vms?vcenter=nope&q=x&vms=vm-1")
    assert status == 200 and "not configured" in page and 'value="vm-1" checked' in page
    job = _job(api)
    status, page = await _get(api, f"/jobs/{job['id']}/retention?keep_last=2")
    assert status == 200 and "no restore points yet" in page
    with api.ctx.sessions.begin() as s:
        for i in range(5):  # one a day, 1 GiB each
            s.add(
                RestorePointRow(
                    id=f"rp-2026112{i}T020000Z-0000000{i}", job_id=job["id"], vcenter="vc1", vm_moref="vm-1",
                    vm_name="web", repository="/tmp/repo", kind="full", disks=[], logical_bytes=0,
                    bytes_read=0,
                    bytes_stored=2**30, started_at=T0 + timedelta(days=i), finished_at=T0 + timedelta(days=i),
                    verify_problems=[],
                )
            )  # fmt: skip
    status, page = await _get(api, f"/jobs/{job['id']}/retention?keep_last=2")
    assert status == 200 and "keeps 2 restore points; the next prune removes 3, freeing up to 3.0 GiB" in page
    status, page = await _get(api, f"/jobs/{job['id']}/retention?keep_last=")  # the default: keeps all
    assert "(the default):</strong>" in page and "keeps 5 restore points" in page
    status, page = await _get(api, f"/jobs/{job['id']}/retention?keep_last=abc")
    assert status == 200 and "whole number" in page


def vm_box(page: Page, name: str) -> Locator:
    return page.get_by_role("checkbox", name=re.compile(f"^{name} "))


async def test_create_a_job_in_the_browser_run_it_and_verify_its_backup(
    system: Callable[..., Awaitable[System]],
) -> None:
    s = await system()
    page = await s.logged_in(Role.ADMIN)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto("/jobs")
    await expect(page.get_by_text("No jobs yet. Create a job to protect a VM.")).to_be_visible()
    await page.get_by_role("link", name="Create job").first.click()
    await page.wait_for_url("**/jobs/new")
    await page.get_by_label("Name", exact=True).fill("lab-nightly")
    await page.get_by_label("vCenter").select_option("lab")
    search, web, db = page.get_by_label("Search VMs"), vm_box(page, "web"), vm_box(page, "db")
    await search.fill("we")  # the lab's VMs: web and db; htmx filters the list as one types
    await expect(db).to_have_count(0)
    await web.check()
    await search.fill("db")
    await db.check()
    await expect(web).to_be_checked()  # a chosen VM stays while the search shows others
    times = page.locator("#next-times li")
    await expect(times).to_have_count(5)
    await page.get_by_label("Repeats").select_option("quarterly")
    await page.get_by_label("Time zone").fill("Asia/Tokyo")
    await expect(page.locator("#next-times")).to_contain_text("The next 5 runs (Asia/Tokyo)")
    await expect(times.first).to_contain_text("01 ")  # the 1st of a month
    await page.get_by_label("Daily").fill("7")
    await page.evaluate("window.scrollTo(0, document.getElementById('vms').offsetTop - 10)")
    await s.shot(page, "job-form")
    await page.get_by_role("button", name="Create job").click()  # no repository chosen
    summary = page.get_by_role("alert")
    await expect(summary).to_be_focused()
    assert await page.title() == "Error: Create job · vbm"
    await summary.get_by_role("link", name=re.compile("Choose a repository")).click()
    await expect(page.locator("#repository")).to_be_focused()
    await expect(page.locator("#repository")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Name", exact=True)).to_have_value("lab-nightly")
    await expect(page.get_by_role("checkbox", name=re.compile(r"^db "))).to_be_checked()
    await page.locator("#repository").select_option(index=1)
    await page.get_by_role("button", name="Create job").click()
    await page.wait_for_url("**/jobs")
    row = page.locator("tr", has_text="lab-nightly")
    await expect(row).to_contain_text("Quarterly (1 Jan, Apr, Jul, Oct) at 02:00 (Asia/Tokyo)")
    await expect(row.locator("time.next-run")).to_have_attribute("title", re.compile(r"UTC"))
    await expect(row.locator("td").nth(2)).to_have_text("2")
    await s.shot(page, "jobs")

    # the journey goes on (issue 20): run it, follow it live to done, see a restore point, verify it
    await row.get_by_role("button", name="Run now").click()
    await page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    bar = page.locator("#run-progress")
    await expect(page.locator("#state-h .badge")).to_have_text("Succeeded", timeout=60_000)
    await expect(bar).to_have_attribute("aria-valuenow", "100")
    await expect(page.locator(".task")).to_have_count(2)  # one row per VM, db and web
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Backups").click()
    point = page.locator("table.points tbody tr", has_text="db")
    await expect(point).to_have_count(1)
    await point.get_by_role("link").first.click()
    await page.get_by_role("button", name="Verify now").click()
    await expect(page.locator("#verify-panel")).to_contain_text("Verified", timeout=30_000)
    assert [e for e in errors if "status of 422" not in e] == [], errors  # the 422 is the form's answer


async def test_a_viewer_sees_jobs_without_controls(system: Callable[..., Awaitable[System]]) -> None:
    s = await system()
    with s.api.ctx.sessions.begin() as sess:
        spec = JobSpec.model_validate({"name": "watched", "vcenter": "lab", "select": [{"name": "vm*"}]})
        job = jobstore.create_job(sess, spec, utcnow(), s.api.ctx.settings.repository_location)
    page = await s.logged_in(Role.VIEWER)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto("/jobs")
    row = page.locator("tr", has_text="watched")
    await expect(row).to_contain_text("Never run")
    await expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    status, _ = await s.api.call("POST", f"/jobs/{job.id}/run")  # someone else starts it: the row follows
    assert status == 202
    await expect(row.locator(".badge")).to_be_visible(timeout=10_000)
    for name in ("Run now", "Edit", "Delete", "Disable", "Create job"):
        assert await page.get_by_text(name, exact=True).count() == 0, name
    await page.get_by_role("link", name=re.compile("^Disabled")).click()
    await page.wait_for_url("**/jobs?enabled=no")
    await expect(page.get_by_text("No job matches these filters.")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("link", name=re.compile("^Disabled"))).to_have_attribute(
        "aria-current", "true"
    )
    await page.go_back()
    await page.wait_for_url("**/jobs")
    await page.go_forward()
    await page.wait_for_url("**/jobs?enabled=no")
    assert errors == [], errors
    status = await page.evaluate(
        """async () => (await fetch('/jobs/x/run', {method: 'POST', headers: {'X-CSRF-Token':
        document.querySelector('meta[name=csrf-token]').content}})).status"""
    )
    assert status == 403
