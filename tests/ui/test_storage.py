"""The Storage page: over HTTP with seeded usage samples and restore points (the tables show the
numbers, the threshold crossing of a rising series and "no trend" for a flat one, CSV downloads,
odd input), and in a real browser against vbm on the lab (a backup and a measurement: the page
shows what GET /api/v1/repositories and /api/v1/backups report, and the charts draw)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from aiohttp.test_utils import TestClient
from playwright.async_api import expect

from shared.catalog import jobs as jobstore
from shared.catalog import prune, users
from shared.db.models import RestorePointRow
from shared.db.usage import UsageSample
from shared.model.access import Role
from shared.model.jobs import JobSpec
from shared.model.retention import Policy
from shared.model.selection import VMRef
from shared.model.units import human_bytes
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi
from tests.ui.conftest import System, log_in

HTML = {"Accept": "text/html"}
PEOPLE = {Role.ADMIN: "ada", Role.VIEWER: "vic"}
PASSWORD = "a long enough pass 21"
GiB = 1 << 30
MiB = 1 << 20
RISING, FLAT, BUCKET = "/repo/rising", "/repo/flat", "s3://bucket/vbm"


async def _log_in(c: TestClient, role: Role) -> None:
    await log_in(c, PEOPLE[role], PASSWORD)


async def _seeded(make_api: MakeApi, tmp_path: Path) -> Api:
    """Two repositories: one rising 2 GiB a day from 40 of 100 GiB over ten days, one flat at 30
    of 100 GiB; restore points of two VMs (a full and two incrementals of web, a full of db)."""
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    now = utcnow()
    today = now.date()
    with api.ctx.sessions.begin() as s:
        for role, name in PEOPLE.items():
            users.add(s, name, role, now, SecuritySettings(), PASSWORD)
        for k in range(10):
            day = today - timedelta(days=9 - k)
            s.add(UsageSample(
                repository=RISING, day=day, total=100 * GiB, free=(60 - 2 * k) * GiB, stored=(10 + k) * GiB,
                logical=(25 + 2 * k) * GiB, unique_bytes=(20 + k) * GiB, referenced_bytes=(40 + 2 * k) * GiB,
                sampled_at=now - timedelta(days=9 - k),
            ))  # fmt: skip
        for k in range(5):
            s.add(UsageSample(
                repository=FLAT, day=today - timedelta(days=4 - k), total=100 * GiB, free=70 * GiB,
                stored=GiB, logical=2 * GiB, sampled_at=now - timedelta(days=4 - k),
            ))  # fmt: skip
        s.add(UsageSample(
            repository=BUCKET, day=today, total=None, free=None, stored=GiB, logical=GiB, sampled_at=now,
        ))  # fmt: skip
        points = [("web", BUCKET, "full", 0), ("web", RISING, "full", 5 * MiB),
                  ("web", RISING, "incremental", 2 * MiB),
                  ("web", RISING, "incremental", MiB), ("db", FLAT, "full", 7 * MiB)]  # fmt: skip
        spec = JobSpec(name="web", vcenter="lab", vms=(VMRef(moref="vm-web"),), retention=Policy(keep_last=1))
        web = jobstore.job_row(spec, "job-a", now, RISING)  # its prune keeps the newest point only
        s.add(web)
        for i, (vm, repo, kind, stored) in enumerate(points):
            at = now - timedelta(days=40 - i)
            s.add(RestorePointRow(
                id=f"rp-{i}", job_id="job-a" if vm == "web" else "job-b", vcenter="lab", vm_moref=f"vm-{vm}",
                vm_name=vm, repository=repo, kind=kind, disks=[], logical_bytes=GiB, bytes_read=stored * 3,
                bytes_stored=stored, started_at=at, finished_at=at, verify_state="ok", verify_problems=[],
            ))  # fmt: skip
    return api


def _cells(html: str, table: str) -> list[list[str]]:
    body = html.split(f'<table class="numbers {table}">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>", 1)[1], re.S)
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows
    ]


async def test_tables_trend_csv_and_odd_input(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _seeded(make_api, tmp_path)
    c = api.client
    await _log_in(c, Role.VIEWER)  # repositories:read is every role's
    async with c.get("/storage", headers=HTML) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert '<a href="/storage"' in html and 'type="application/json" id="storage-data"' in html
    assert html.count("chart.umd.min.js") == 1
    # under the CSP: no inline script but the JSON data island (data, never executed), no style=""
    inline = [tag for tag in re.findall(r"<script[^>]*>", html) if "src=" not in tag]
    assert inline == ['<script type="application/json" id="storage-data">'] and " style=" not in html
    today = utcnow().date()
    rising, flat = html.split(f'data-repository="{RISING}"')[1], html.split(f'data-repository="{FLAT}"')[1]
    # the line through (day k, 40 + 2k GiB) reaches 80 GiB at k = 20: 11 days after today
    assert 'data-crossing="day"' in rising.split("</p>")[0]
    assert f'datetime="{(today + timedelta(days=11)).isoformat()}"' in rising.split("</p>")[0]
    assert "reaches 80 %" in rising.split("</p>")[0] and "+2.0 GiB a day" in rising.split("</p>")[0]
    assert 'data-crossing="flat"' in flat.split("</p>")[0] and "No trend" in flat.split("</p>")[0]
    bucket = html.split(f'data-repository="{BUCKET}"')[1].split("</p>")[0]
    assert 'data-crossing="unsized"' in bucket and "does not report its size" in bucket
    usage_rows = _cells(rising, "usage")
    assert usage_rows[-1] == [today.isoformat(), "100.0 GiB", "58.0 GiB", "42.0 GiB", "58.0"]
    assert len(usage_rows) == 10
    reduction_rows = _cells(rising, "reduction")
    assert reduction_rows[-1] == [
        today.isoformat(),
        "43.0 GiB",
        "19.0 GiB",
        "2.26 : 1",
        "2.0 : 1",
        "1.53 : 1",
    ]
    assert _cells(html, "vms") == [["web", "8.0 MiB"], ["db", "7.0 MiB"]]
    assert _cells(html, "jobs") == [["job-a", "8.0 MiB"], ["job-b", "7.0 MiB"]]
    assert _cells(html, "growth") == [["web", "8.0 MiB"], ["db", "7.0 MiB"]]  # all within 90 days
    assert _cells(html, "change") == [["web", "2", human_bytes(round((6 * MiB + 3 * MiB) / 2))]]
    # what a prune frees is the prune preview's removals, summed (the same catalog function)
    with api.ctx.sessions.begin() as s:
        removed = [r.id for r, d, _ in prune.preview(s, api.ctx.settings, utcnow()) if not d.keep]
    assert sorted(removed) == ["rp-1", "rp-2"]  # web's older two in RISING: 5 + 2 MiB
    assert _cells(html, "prune") == [[RISING, "2", "7.0 MiB"]]

    async with c.get("/storage?days=30", headers=HTML) as resp:  # the growth window follows days
        short = await resp.text()
        assert resp.status == 200 and "last 30 days" in short and 'class="numbers growth"' not in short
        assert "No backup in these days" in short

    for chart, head in (("usage", "used_percent"), ("reduction", "reduction"), ("vms", "bytes"),
                        ("jobs", "bytes"), ("growth", "bytes"), ("change", "changed_bytes_per_incremental"),
                        ("prune", "bytes")):  # fmt: skip
        async with c.get(f"/storage/{chart}.csv") as resp:
            assert resp.status == 200 and resp.content_type == "text/csv", chart
            rows = list(csv.reader(io.StringIO(await resp.text())))
        assert head in rows[0], (chart, rows[0])
        if chart == "usage":
            assert [RISING, today.isoformat(), str(100 * GiB), str(58 * GiB), str(42 * GiB), "58.0"] in rows
            assert len(rows) == 1 + 10 + 5 + 1
        if chart == "vms":
            assert rows[1:] == [["web", str(8 * MiB)], ["db", str(7 * MiB)]]

    for odd in ("/storage?days=0", "/storage?days=abc", "/storage?days=%C2%B2", "/storage?days=9999",
                "/storage?nope=1", "/storage/usage.csv?days=-1"):  # fmt: skip
        async with c.get(odd, headers=HTML) as resp:
            assert 400 <= resp.status < 500, (odd, resp.status)
            assert "<title>" in await resp.text() or odd.endswith("-1")
    async with c.get("/storage/nothing.csv", headers=HTML) as resp:
        assert resp.status == 404
    c.session.cookie_jar.clear()
    async with c.get("/storage", headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/login")


async def test_empty_catalog_says_what_to_do(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    with api.ctx.sessions.begin() as s:
        users.add(s, "vic", Role.VIEWER, utcnow(), SecuritySettings(), PASSWORD)
    await _log_in(api.client, Role.VIEWER)
    async with api.client.get("/storage", headers=HTML) as resp:
        html = await resp.text()
        assert resp.status == 200 and "No repository yet" in html and "run a backup job" in html


async def test_a_backup_and_a_measurement_show_on_the_storage_page(
    system: Callable[..., Awaitable[System]],
) -> None:
    s = await system()
    started = await s.api.call("POST", f"/jobs/{s.pipeline.create_job('nightly', ['web'])}/run")
    assert started[0] == 202, started
    assert (await s.pipeline.wait_run(started[1]["run_id"])).state == "succeeded"
    status, measured = await s.api.call("POST", "/repositories/measure")
    assert status == 200, measured
    status, listed = await s.api.call("GET", "/repositories")
    assert status == 200 and len(listed["repositories"]) == 1, listed
    repo = listed["repositories"][0]
    status, backups = await s.api.call("GET", "/backups")
    assert status == 200, backups

    page = await s.logged_in(Role.VIEWER)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Storage").click()
    await expect(page.get_by_role("heading", name="Storage", exact=True)).to_be_visible()
    section = page.locator("section.storage-repo", has_text=repo["repository"])
    await expect(section).to_have_count(1)
    await expect(section.locator("[data-crossing]")).to_contain_text("No trend yet")  # one day sampled
    await section.get_by_text("Usage as a table").click()
    sample = repo["samples"][0]
    row = section.locator("table.usage tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(human_bytes(sample["total"] - sample["free"]))
    vms = page.locator("table.vms tbody tr")
    await expect(vms).to_have_count(len(repo["per_vm"]))
    for name, size in repo["per_vm"].items():
        await expect(vms.filter(has_text=name)).to_contain_text(human_bytes(size))
    per_vm: dict[str, int] = {}  # the backups' new data, per VM: what the page's sizes sum
    for b in backups["backups"]:
        per_vm[b["vm_name"]] = per_vm.get(b["vm_name"], 0) + b["bytes_stored"]
    assert per_vm == repo["per_vm"] and "web" in per_vm, (per_vm, repo["per_vm"])
    canvases = page.locator("canvas[data-chart]")
    assert await canvases.count() >= 4
    drawn = await page.evaluate(
        "Array.from(document.querySelectorAll('canvas[data-chart]')).every(c => window.Chart.getChart(c))"
    )
    assert drawn
    await s.shot(page, "storage")
    admin = await s.logged_in(Role.ADMIN)  # the repository's settings page, with its usage
    await admin.goto("/settings/repositories")
    await expect(admin.get_by_role("heading", name="Repository locations")).to_be_visible()
    await s.shot(admin, "settings-repositories")
    assert not errors, errors
