"""The dashboard, alerts and the notifications log: over HTTP (rendering from a seeded catalog,
honest numbers, roles, odd input) and two browser tests against vbm on the lab."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from aiohttp import web
from playwright.async_api import expect

from shared.catalog import alerts, users
from shared.catalog.jobs import job_row
from shared.db.models import Notification, RestorePointRow, Run, SnapshotLedger, Task
from shared.db.usage import UsageSample
from shared.db.users import User
from shared.model.access import Role
from shared.model.jobs import JobSpec, VMRef
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi
from tests.ui.conftest import System, log_in

PASSWORD = "a long enough pass 9"


async def _login(api: Api, role: Role) -> str:
    """A fresh session of a user of `role` in the client's cookie jar; its CSRF token."""
    name = f"u-{role.value}"
    with api.ctx.sessions.begin() as s:
        if s.get(User, name) is None:
            users.add(s, name, role, utcnow(), SecuritySettings(), PASSWORD)
    return await log_in(api.client, name, PASSWORD)


async def _get(api: Api, path: str, status: int = 200) -> str:
    async with api.client.get(path, headers={"Accept": "text/html"}, allow_redirects=False) as resp:
        text = await resp.text()
        assert resp.status == status, (path, resp.status, text[:600])
        return text


def seed(api: Api, *, used: float = 0.5) -> None:
    """A scheduled job with runs in the last day (2 succeeded, 1 warning, 1 failed, 1 running
    with a task), two open alerts, a repository `used` full, a delivery."""
    now = utcnow()
    with api.ctx.sessions.begin() as s:
        spec = JobSpec(name="nightly", vcenter="lab", vms=(VMRef(moref="vm-1", name="vm1"),))
        job = job_row(spec, "job-n", now, "/repo/a")
        job.schedule = {"kind": "preset", "preset": "daily", "at": "02:00", "timezone": "UTC"}
        s.add(job)
        s.flush()
        for i, state in enumerate(("succeeded", "succeeded", "warning", "failed")):
            at = now - timedelta(hours=i + 1)
            s.add(
                Run(
                    id=f"r{i}", job_id="job-n", trigger="schedule", state=state, created_at=at, finished_at=at
                )
            )
        s.add(
            Run(
                id="r-old",
                job_id="job-n",
                trigger="schedule",
                state="failed",
                created_at=now - timedelta(days=3),
                finished_at=now - timedelta(days=3),
            )
        )
        s.add(Run(id="r-now", job_id="job-n", trigger="api", state="running", created_at=now, started_at=now))
        s.flush()
        s.add(
            Task(
                id="r-now.vm1",
                run_id="r-now",
                vcenter="lab",
                vm_moref="vm-1",
                vm_name="vm1",
                phase="transfer",
                state="running",
                bytes_done=256 << 20,
                bytes_total=1 << 30,
                rate=64 << 20,
                created_at=now,
                updated_at=now,
            )
        )
        s.add(
            RestorePointRow(
                id="rp-1",
                vcenter="lab",
                vm_moref="vm-1",
                vm_name="vm1",
                repository="/repo/a",
                kind="full",
                disks=[],
                logical_bytes=10 << 30,
                bytes_read=1,
                bytes_stored=4 << 30,
                started_at=now,
                finished_at=now,
            )
        )
        total = 100 << 30
        s.add(
            UsageSample(
                repository="/repo/a",
                day=now.date(),
                total=total,
                free=int(total * (1 - used)),
                stored=4 << 30,
                logical=10 << 30,
                sampled_at=now,
            )
        )
        for key, severity in (("a1", "error"), ("a2", "warning")):
            alerts.raise_alert(
                s,
                key=key,
                kind="run_failed",
                severity=severity,  # type: ignore[arg-type]
                message=f"alert {key}: the run failed",
                now=now,
                vm_name="vm1",
            )
        s.add(
            Notification(
                id="n1",
                event="run.finished:r3",
                channel="ops",
                outcome="failure",
                title="nightly failed",
                state="failed",
                attempts=3,
                error="HTTP 500",
                created_at=now,
            )
        )


async def test_dashboard_shows_the_estate(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    seed(api, used=0.9)
    await _login(api, Role.ADMIN)
    page = await _get(api, "/dashboard")
    assert "75.0 %" in page and "of 4 runs" in page  # 3 of 4 finished in the last 24 h went well
    assert 'href="/runs?state=failed"' in page and 'href="/runs?state=succeeded"' in page
    assert 'data-task="r-now.vm1"' in page and 'aria-valuenow="25"' in page  # the run now, 25 %
    assert "alert a1: the run failed" in page and ">Error<" in page and ">Acknowledge<" in page
    assert "90.0 % full, over the 80 % line" in page  # the text warning, not the colour alone
    assert "data-open-snapshots>0<" in page  # the ledger holds nothing open
    assert "daily at 02:00 (UTC)" in page and 'href="/jobs/job-n"' in page
    assert 'hx-get="/dashboard/vms"' in page and "/static/ui/dash.js" in page
    running = await _get(api, "/dashboard/running")
    assert 'data-task="r-now.vm1"' in running and "<html" not in running and ">Downloading<" in running
    assert 'data-open-snapshots hx-swap-oob="true">0<' in running  # the count, refreshed with it

    with api.ctx.sessions.begin() as s:  # a snapshot taken and not yet removed counts
        s.add(
            SnapshotLedger(
                snapshot_name="vbm-r-now",
                vm_moref="vm-1",
                vcenter="lab",
                vm_name="vm1",
                run_id="r-now",
                task_id="r-now.vm1",
                state="created",
                requested_at=utcnow(),
            )
        )
    assert "data-open-snapshots>1<" in await _get(api, "/dashboard")


async def test_no_runs_is_no_success_rate(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    await _login(api, Role.VIEWER)
    page = await _get(api, "/dashboard")
    assert "No runs in the last 24 hours" in page and "100" not in page.split("Runs, last 24 hours")[1][:400]
    assert "No open alerts" in page and "No repository holds a restore point yet" in page
    assert "No enabled job has a schedule" in page and "Nothing runs now" in page
    seed(api, used=0.5)
    page = await _get(api, "/dashboard")
    assert "over the 80 % line" not in page and "50.0 %" in page


async def test_viewer_sees_no_controls_and_forged_posts_are_refused(
    make_api: MakeApi, tmp_path: Path
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    seed(api)
    csrf = await _login(api, Role.VIEWER)
    for path in ("/dashboard", "/alerts", "/notifications"):
        page = await _get(api, path)
        assert "Acknowledge" not in page and "Send test" not in page, path
    alert_id = re.search(r'id="alert-(alert-[0-9a-f]+)"', await _get(api, "/alerts"))
    assert alert_id
    async with api.client.post(f"/alerts/{alert_id[1]}/ack", data={"csrf_token": csrf}) as resp:
        assert resp.status == 403
    async with api.client.post("/notifications/test", data={"csrf_token": csrf, "channel": "ops"}) as resp:
        assert resp.status == 403
    status, found = await api.call("GET", "/alerts")
    assert status == 200 and found["total"] == 2  # nothing acknowledged

    csrf = await _login(api, Role.OPERATOR)  # operators acknowledge (alerts:ack), do not test channels
    assert "Send test" not in await _get(api, "/notifications")
    async with api.client.post("/notifications/test", data={"csrf_token": csrf, "channel": "ops"}) as resp:
        assert resp.status == 403
    form = {"csrf_token": csrf, "next": "/alerts"}
    async with api.client.post(f"/alerts/{alert_id[1]}/ack", data=form, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/alerts"
    async with api.client.post(
        f"/alerts/{alert_id[1]}/ack", data=form, headers={"HX-Request": "true"}
    ) as resp:
        assert resp.status == 200 and await resp.text() == ""  # htmx: the item leaves the open list
    status, found = await api.call("GET", "/alerts")
    assert found["total"] == 1  # the same store as the API
    other = found["alerts"][0]["id"]
    dash = {**form, "list": "dashboard", "next": "/dashboard"}
    async with api.client.post(f"/alerts/{other}/ack", data=dash, headers={"HX-Request": "true"}) as resp:
        text = await resp.text()  # the dashboard's list and its count, afresh
        assert "No open alerts" in text and 'id="dash-alert-count" hx-swap-oob="true">0<' in text
    page = await _get(api, "/alerts?all=yes")
    assert "acknowledged" in page and "2 alerts" in page and "Acknowledge<" not in page
    async with api.client.post("/alerts/alert-nope/ack", data=form) as resp:
        assert resp.status == 404 and resp.content_type == "text/html"


async def test_alerts_and_notifications_pages(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    seed(api)
    closed = f"http://127.0.0.1:{_closed_port()}/hook"
    status, body = await api.call("POST", "/channels", json={"name": "ops", "type": "webhook", "url": closed})
    assert status == 201, body
    csrf = await _login(api, Role.ADMIN)
    form = {"csrf_token": csrf, "channel": "ops"}
    async with api.client.post("/notifications/test", data=form) as resp:  # no JavaScript: the page
        page = await resp.text()
        assert resp.status == 200 and "<html" in page and 'data-tested="failed"' in page
        assert "cannot post to 127.0.0.1" in page and closed not in page  # the host, never the URL
    async with api.client.post("/notifications/test", data=form, headers={"HX-Request": "true"}) as resp:
        page = await resp.text()
        assert resp.status == 200 and "<html" not in page and ">Failed<" in page
    async with api.client.post("/notifications/test", data={**form, "channel": "nope"}) as resp:
        assert resp.status == 422 and "no notification channel named &#39;nope&#39;" in await resp.text()
    page = await _get(api, "/alerts?severity=warning")
    assert "alert a2" in page and "alert a1" not in page and ">Warning<" in page
    page = await _get(api, "/alerts?limit=1")
    assert 'rel="next"' in page and "1&ndash;1 of 2" in page
    page = await _get(api, "/notifications?state=failed&channel=ops")
    assert "nightly failed" in page and "HTTP 500" in page and ">Failed<" in page
    assert "No delivery matches" in await _get(api, "/notifications?state=sent")
    for odd in (
        "/alerts?severity=loud",
        "/alerts?all=maybe",
        "/alerts?limit=0",
        "/alerts?offset=-1",
        "/alerts?nope=1",
        "/alerts?cursor=zz",
        "/notifications?state=lost",
        "/notifications?limit=x",
        "/dashboard?x=1",
        "/dashboard/running?x=1",
    ):
        text = await _get(api, odd, 422)
        assert "<html" in text, odd


async def _receiver() -> AsyncIterator[str]:
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_browser_dashboard_live_and_acknowledge(system: Callable[..., Awaitable[System]]) -> None:
    """Admin: services up, 0 open snapshots when idle; acknowledging an alert removes it in place;
    a run shows a live bar and leaves, with no reload; 0 open snapshots after it."""
    s = await system()
    with s.api.ctx.sessions.begin() as db:
        alerts.raise_alert(
            db,
            key="ui-ack",
            kind="verify_failed",
            severity="error",
            message="restore point rp-x failed verification",
            now=utcnow(),
            vm_name="vm1",
        )
    for _ in range(100):  # the pipeline's services beat (the fixture runs no scheduler, no gateway service)
        _, seen = await s.api.call("GET", "/services")
        if len([x for x in seen["services"] if x["up"]]) == 4:
            break
        await asyncio.sleep(0.2)
    page = await s.logged_in(Role.ADMIN)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.reload()
    services = page.get_by_role("region", name="Services")
    for name in ("snapshotter", "mover", "verifier", "notifier"):
        await expect(services.get_by_role("row").filter(has_text=name).locator(".badge")).to_have_text("up")
    await expect(page.locator("[data-open-snapshots]")).to_have_text("0")
    await expect(page.locator("#dash-vms")).to_contain_text("protected", timeout=20000)
    item = page.locator(".alert-item", has_text="rp-x failed verification")
    await expect(item.locator(".badge")).to_have_text("Error")
    await page.evaluate("window.__same = true")  # gone after a full reload
    await item.get_by_role("button", name="Acknowledge").click()
    await expect(item).to_have_count(0)
    await expect(page.locator("#dash-alerts")).to_contain_text("No open alerts")
    await expect(page.locator("#dash-alert-count")).to_have_text("0")
    assert await page.evaluate("window.__same === true")
    await expect(page.locator("[data-live-state]")).to_have_text("")  # the event stream is up

    # A run started elsewhere appears with a moving bar, and leaves when done, without a reload;
    # afterwards no snapshot is held (the no-leak promise) and the run counts in the last 24 h.
    # ~9 s for 9 MiB: long enough that a progress event lands while the bar is there, on a busy machine
    s.pipeline.lab.datastore_limits(s.pipeline.lab.datastore, bandwidth_mbps=8)
    run_id = await s.pipeline.run_job(s.pipeline.create_job("dash", ["db"]))
    bar = page.locator("#dash-running [role=progressbar]")
    await expect(bar).to_have_count(1, timeout=15000)
    await expect(bar).not_to_have_attribute("aria-valuenow", "0", timeout=15000)
    await s.shot(page, "dashboard")
    await expect(bar.locator("xpath=ancestor::tr")).to_contain_text(re.compile("Downloading|Verifying|Done"))
    await expect(page.locator("#dash-running [data-idle]")).to_be_visible(timeout=60000)
    await expect(page.locator("[data-open-snapshots]")).to_have_text("0")  # live: removed, not leaked
    assert (await s.pipeline.wait_run(run_id)).state == "succeeded"
    assert await page.evaluate("window.__same === true")
    await page.reload()
    await expect(page.locator("[data-open-snapshots]")).to_have_text("0")
    await expect(page.get_by_role("link", name="Succeeded 1")).to_be_visible()
    assert errors == [], errors


async def test_browser_send_test_shows_the_outcome_inline(system: Callable[..., Awaitable[System]]) -> None:
    """Statement 11: "Send test" shows delivered, or the channel's error, inline within 10 s."""
    s = await system()
    gen = _receiver()
    url = await gen.__anext__()
    try:
        for name, where in (("hook-ok", url), ("hook-down", f"http://127.0.0.1:{_closed_port()}/hook")):
            status, body = await s.api.call(
                "POST", "/channels", json={"name": name, "type": "webhook", "url": where}
            )
            assert status == 201, body
        page = await s.logged_in(Role.ADMIN)
        await page.get_by_role("link", name="Notifications").click()
        rows = page.locator("tbody tr")
        ok, down = rows.filter(has_text="hook-ok"), rows.filter(has_text="hook-down")
        await ok.get_by_role("button", name="Send test").click()
        await expect(ok.locator("[data-tested]")).to_have_text("Delivered", timeout=10000)
        await down.get_by_role("button", name="Send test").click()
        await expect(down.locator("[data-tested]")).to_have_text("Failed", timeout=10000)
        await expect(down.locator(".tested-error")).to_contain_text("cannot post to")
        await s.shot(page, "notifications")
        with s.api.ctx.sessions.begin() as db:
            for key, severity, kind in (
                ("s1", "critical", "snapshot_stuck"),
                ("s2", "warning", "storage_usage"),
            ):
                message = f"{kind.replace('_', ' ')}: seeded for the screenshot"
                alerts.raise_alert(db, key=key, kind=kind, severity=severity, message=message, now=utcnow())  # type: ignore[arg-type]
        await page.get_by_role("link", name="Alerts").click()
        await expect(page.locator(".alert-item .badge").first).to_have_text("Warning")  # newest first
        await s.shot(page, "alerts")
    finally:
        await gen.aclose()
    await asyncio.sleep(0)
