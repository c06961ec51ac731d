"""The Runs pages: the list (filters, paging, odd values), a run's page (state, per-VM rows with
phases and bytes, the error explained, the snapshot clean-up, the alerts, the log), access
(a viewer sees no Cancel and a forged cancel is 403), and in a real browser a run followed live to
"Succeeded" through a cut stream, and a failed run (a lab fault) told plainly."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from services.gateway.api_events import HUB
from shared.catalog import alerts, runlog, users
from shared.catalog.jobs import job_row
from shared.db.models import Run, SnapshotLedger, Task
from shared.model.access import Role
from shared.model.jobs import JobSpec
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi
from tests.pipeline.test_faults import eventually
from tests.ui.conftest import PEOPLE, System, log_in

HTML = {"Accept": "text/html"}
RUN = "job-nightly-20261206T020000-ab12"


def _seed(api: Api) -> None:
    """A job with a failed run of two VMs (one backed up, one failed in the transfer, its
    snapshot removed), a running one and its log, alert and ledger."""
    now = utcnow()
    with api.ctx.sessions.begin() as s:
        for role, (name, password) in PEOPLE.items():
            users.add(s, name, role, now, SecuritySettings(), password)
        spec = JobSpec.model_validate({"name": "nightly", "vcenter": "lab", "vms": [{"name": "web"}]})
        s.add(job_row(spec, "job-nightly", now, "/tmp/repo"))
        s.flush()
        start = now - timedelta(minutes=5)
        s.add(Run(id=RUN, job_id="job-nightly", trigger="manual", state="partial", created_at=start,
                  started_at=start, finished_at=start + timedelta(seconds=75),
                  error="1 of 2 VMs did not back up"))  # fmt: skip
        s.add(Run(id="job-nightly-20261206T030000-cd34", job_id="job-nightly", trigger="schedule",
                  state="running", created_at=now, started_at=now))  # fmt: skip
        s.flush()
        common = {"run_id": RUN, "vcenter": "lab", "created_at": start, "updated_at": start}
        s.add(Task(id=f"{RUN}.lab:vm-1", vm_moref="vm-1", vm_name="web", phase="done", state="succeeded",
                   bytes_done=12 << 20, bytes_total=12 << 20, bytes_stored=3 << 20, finished_at=start,
                   restore_point_id=None, kind="full", **common))  # fmt: skip
        s.add(Task(id=f"{RUN}.lab:vm-2", vm_moref="vm-2", vm_name="db", phase="transfer", state="failed",
                   bytes_done=1 << 20, bytes_total=9 << 20, finished_at=start,
                   error="HTTP 500 reading db-flat.vmdk", **common))  # fmt: skip
        for vm, moref in (("web", "vm-1"), ("db", "vm-2")):
            s.add(SnapshotLedger(snapshot_name=f"vbm-{RUN}", vm_moref=moref, vcenter="lab", vm_name=vm,
                                 run_id=RUN, task_id=f"{RUN}.lab:{moref}", state="removed", attempts=0,
                                 requested_at=start, removed_at=start))  # fmt: skip
        alerts.raise_alert(s, key="x", kind="backup-failed", severity="error", message="db did not back up",
                           now=now, vm_name="db", run_id=RUN)  # fmt: skip
        runlog.write(s, RUN, "db: failed: HTTP 500 <reading>", now, level="error")
        runlog.write(s, RUN, "run partial: 1 of 2 VMs did not back up", now)


async def _log_in(api: Api, role: Role) -> str:
    return await log_in(api.client, *PEOPLE[role], "/runs")


async def _get(api: Api, path: str) -> tuple[int, str]:
    async with api.client.get(path, headers=HTML, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_runs_list_and_a_run_page(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    _seed(api)
    await _log_in(api, Role.ADMIN)

    status, page = await _get(api, "/runs")
    assert status == 200 and "2 runs" in page and page.index("T030000") < page.index("T020000"), (
        page
    )  # newest first
    assert ">Partial</span>" in page and ">Running</span>" in page and 'role="progressbar"' in page
    assert "13.0 MiB" in page and "1 min 15 s" in page and re.search(r'<time datetime="[0-9T:-]+Z">', page)
    status, page = await _get(api, "/runs?state=partial&job=nightly")
    assert status == 200 and "1 run matches the filters" in page and "T030000" not in page
    status, page = await _get(api, "/runs?trigger=nope")
    assert status == 200 and "No run matches these filters" in page
    status, page = await _get(api, "/runs?limit=1")
    assert status == 200 and 'rel="next" href="/runs?cursor=' in page
    cursor = re.search(r'rel="next" href="/runs\?cursor=([^"]+)"', page)
    assert cursor
    status, page = await _get(api, f"/runs?limit=1&cursor={cursor[1]}")
    assert status == 200 and "T020000" in page and "T030000" not in page and "First page" in page
    for odd in ("state=bogus", "limit=0", "limit=x", "cursor=%%%", "nope=1", "since=yesterday", "order=up"):
        status, page = await _get(api, f"/runs?{odd}")
        assert 400 <= status < 500 and "<title>Error:" in page, (odd, status)
    status, rows = await _get(api, "/runs/rows?state=running")
    assert status == 200 and rows.lstrip().startswith('<tbody id="runs-rows">') and "T030000" in rows

    status, page = await _get(api, f"/runs/{RUN}")
    assert status == 200, page
    assert "Run of nightly" in page and ">Partial</span>" in page and "1 of 2 VMs did not back up" in page
    assert page.count('class="task"') == 2 and ">Succeeded</span>" in page and ">Failed</span>" in page
    assert "HTTP 500 reading db-flat.vmdk" in page and "Reading the VM&#39;s disks" in page  # explained
    assert 'class="phase-now" data-phase="downloading">Downloading</strong> (failed here)' in page
    assert "Snapshot removed: none left behind" in page  # the clean-up, per VM and for the run
    assert 'href="/alerts?all=true#alert-' in page and "db did not back up" in page
    assert 'aria-valuenow="100"' in page and 'aria-valuemin="0"' in page and 'aria-valuemax="100"' in page
    assert "HTTP 500 &lt;reading&gt;" in page and 'data-after="' in page  # the log, escaped
    assert f'href="/runs/{RUN}" class="button">Refresh' in page and 'role="status" aria-live="polite"' in page
    assert "Cancel the run" not in page  # it has ended
    assert "<script>" not in page and "style=" not in page
    status, panel = await _get(api, f"/runs/{RUN}/panel")
    assert status == 200 and panel.startswith('<section id="run-panel"') and "<html" not in panel

    status, page = await _get(api, "/runs/job-nope-1")
    assert status == 404 and "<title>Error:" in page and "no run" in page
    assert (await _get(api, "/runs/job-nope-1/panel"))[0] == 404
    for odd in ("x" * 300, "%E2%80%AE"):
        status, page = await _get(api, f"/runs/{odd}")
        assert status == 404 and "<title>Error:" in page, odd
    status, page = await _get(api, "/runs/%00x")  # a NUL in any parameter: 422 before the handler
    assert status == 422 and "<title>Error:" in page


async def test_cancel_by_role(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    _seed(api)
    running = "job-nightly-20261206T030000-cd34"

    csrf = await _log_in(api, Role.VIEWER)
    status, page = await _get(api, f"/runs/{running}")
    assert (
        status == 200 and ">Running</span>" in page and "Cancel the run" not in page and "/cancel" not in page
    )
    async with api.client.post(f"/runs/{running}/cancel", data={"csrf_token": csrf}) as resp:
        assert resp.status == 403 and "jobs:run" in await resp.text()

    csrf = await _log_in(api, Role.OPERATOR)
    status, page = await _get(api, f"/runs/{running}")
    assert "Cancel the run" in page
    async with api.client.post(f"/runs/{running}/cancel", data={}) as resp:  # no CSRF token
        assert resp.status == 403
    async with api.client.post(
        f"/runs/{running}/cancel", data={"csrf_token": csrf}, allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == f"/runs/{running}"
    status, page = await _get(api, f"/runs/{running}")
    assert "Cancel requested" in page and "Cancel the run" not in page
    with api.ctx.sessions() as s:
        run = s.get(Run, running)
        assert run is not None and run.cancel_requested
    async with api.client.post(f"/runs/{RUN}/cancel", data={"csrf_token": csrf}) as resp:  # ended
        assert resp.status == 409 and "ended already" in await resp.text()


# ---- in a real browser --------------------------------------------------------------------------


async def _make_job(s: System, name: str, vms: list[str]) -> str:
    body = {
        "name": name,
        "vcenter": "lab",
        "vms": [{"name": v} for v in vms],
        "repository": str(s.pipeline.repo_dir),
    }
    status, job = await s.api.call("POST", "/jobs", json=body)
    assert status == 201, job
    return str(job["id"])


async def _start(s: System, job_id: str) -> str:
    status, started = await s.api.call("POST", f"/jobs/{job_id}/run")
    assert status == 202, started
    return str(started["run_id"])


async def _watch(
    page: Page,
    seen: list[str],
    values: list[int],
    heard: list[str],
    until: Callable[[], bool],
    timeout: float,
) -> None:
    """Sample the page (no navigation) until `until`: the phase labels and the bar's value."""
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        labels = await page.locator("#run-panel .phase-now").all_text_contents()
        for label in labels:
            if not seen or seen[-1] != label:
                seen.append(label)
        said = await page.locator("#run-announce").text_content()
        if said and (not heard or heard[-1] != said):
            heard.append(said)
        now = await page.locator("#run-progress").get_attribute("aria-valuenow")
        if now is not None:
            values.append(int(now))
        await asyncio.sleep(0.1)


def _console(page: Page) -> list[str]:
    errors: list[str] = []

    def on(message: Any) -> None:
        text = message.text
        # a cut stream is the test's doing: the browser logs the failed request, nothing else may fail
        if message.type == "error" and "ERR_INTERNET_DISCONNECTED" not in text and "net::" not in text:
            errors.append(text)

    page.on("console", on)
    return errors


async def test_a_run_live_to_succeeded_through_a_cut_stream(system: Callable[..., Awaitable[System]]) -> None:
    s = await system(VBM_PIPELINE__TRANSFER_STALL="60")
    job_id = await _make_job(s, "live", ["web"])
    s.pipeline.lab.download_fault("stall", path="web-flat.vmdk", after_bytes=1 << 20, count=1)
    run_id = await _start(s, job_id)
    page = await s.logged_in(Role.ADMIN)
    errors = _console(page)
    await page.goto("/runs")  # the list: its running row moves too, then its link opens the run
    row = page.locator(f'#runs-rows tr[data-run-id="{run_id}"]')
    await expect(row.get_by_role("progressbar")).to_have_attribute(
        "aria-valuenow", re.compile("^[1-9]"), timeout=20_000
    )
    await expect(row.locator(".badge")).to_have_text("Running")
    await row.get_by_role("link", name=run_id).click()
    await page.wait_for_url(f"**/runs/{run_id}")
    url = page.url
    await expect(page.locator("#run-live-note")).to_contain_text("Live")

    # statement 1: the bar rises without navigation (the stall holds the transfer part way)
    seen: list[str] = []
    values: list[int] = []
    heard: list[str] = []
    await _watch(page, seen, values, heard, lambda: bool(values) and values[-1] > 0, 20)
    assert values and values[-1] > 0, (seen, values)
    await expect(page.locator("#run-panel .phase-now")).to_have_text("Downloading", timeout=10_000)
    # under the VM's bar, one per disk (web has two; the stall holds the first part way)
    disks = page.locator("#run-panel .task .disk-bars li")
    await expect(disks).to_have_count(2, timeout=10_000)
    first = page.get_by_role("progressbar", name=re.compile("^Progress of web Disk ")).first
    await expect(first).to_have_attribute("aria-valuenow", re.compile("^[1-9]"))
    await expect(disks.first).to_contain_text(re.compile(r"MiB of 12\.0 MiB"))
    await s.shot(page, "run-live")

    # statement 3: the stream cut shows "Reconnecting...", then resumes; no log line twice
    await page.route("**/api/v1/events*", lambda route: route.abort("internetdisconnected"))
    hub = s.api.client.app[HUB]
    for client in list(hub.clients):  # the gateway ends the streams it serves: the connection drops
        client.closed = True
        client.wake.set()
    await expect(page.get_by_text("Reconnecting...")).to_be_visible(timeout=5_000)
    await page.unroute("**/api/v1/events*")
    s.pipeline.lab.clear_faults()  # the transfer goes on
    await expect(page.get_by_text("Reconnecting...")).to_be_hidden(timeout=10_000)

    # statement 2: phases in order, the end reads "Succeeded", with no reload
    await _watch(page, seen, values, heard, lambda: bool(seen) and seen[-1] == "Done", 40)
    await expect(page.locator("#state-h .badge")).to_have_text("Succeeded", timeout=20_000)
    order = ["Queued", "Connecting", "Snapshot", "Downloading", "Verifying", "Replicating", "Done"]
    assert [order.index(x) for x in seen] == sorted(order.index(x) for x in seen), seen
    assert "Downloading" in seen and seen[-1] == "Done", seen
    assert any(said.startswith("web: ") for said in heard), heard  # phase changes are announced
    assert values == sorted(values) or max(values) == 100, values
    await expect(page.locator("#run-progress")).to_have_attribute("aria-valuenow", "100")
    await expect(page.locator("#run-cleanup")).to_contain_text("none left behind")
    await expect(page.locator("#run-announce")).to_contain_text("The run ended: Succeeded")  # polite status
    assert page.url == url  # no navigation

    await expect(page.locator("#run-log li").last).to_contain_text("run succeeded", timeout=10_000)
    ids = await page.locator("#run-log li").evaluate_all("items => items.map(i => i.dataset.id)")
    assert len(ids) == len(set(ids)), ids  # nothing repeated, nothing missing:
    with s.api.ctx.sessions() as session:
        from shared.catalog.runs import log_view

        assert [str(x["id"]) for x in log_view(session, run_id)["lines"]] == ids
    assert await page.locator("[role=status]#run-announce").count() == 1
    assert errors == [], errors


async def test_a_failed_run_says_why(system: Callable[..., Awaitable[System]]) -> None:
    s = await system(VBM_PIPELINE__SNAPSHOT_TIMEOUT="3")  # a create refused is known gone after 6 s
    job_id = await _make_job(s, "broken", ["web"])
    s.pipeline.lab.fault("CreateSnapshot_Task", "task-error", fault="InvalidState")  # vCenter refuses
    run_id = await _start(s, job_id)
    run = await s.pipeline.wait_run(run_id)
    assert run.state == "failed", s.pipeline.dump(run_id)
    await eventually(lambda: not s.pipeline.open_ledger(), what="the refused snapshot known gone")
    page = await s.logged_in(Role.VIEWER)
    errors = _console(page)
    await page.goto(f"/runs/{run_id}")
    await expect(page.locator("#state-h .badge")).to_have_text("Failed")
    task = page.locator("#run-panel .task")
    await expect(task.locator(".phase-now")).to_have_text("Snapshot")
    await expect(task.locator(".steps li.failed")).to_have_text("Snapshot (failed)")
    await expect(task.locator(".task-error")).to_contain_text("InvalidState")
    await expect(task.locator(".task-error")).to_contain_text("vCenter did not make the VM's snapshot")
    await expect(page.locator("#run-cleanup")).to_contain_text("none left behind")
    await expect(page.get_by_role("link", name="backup-failed")).to_be_visible()
    assert await page.get_by_role("button", name="Cancel the run").count() == 0
    await s.shot(page, "run-failed")
    await page.goto(f"/runs?state=failed&job={job_id}")
    await expect(page.locator("#runs-rows tr")).to_have_count(1)
    await expect(page.locator("#runs-rows .badge")).to_have_text("Failed")
    await s.shot(page, "runs")
    assert errors == [], errors
    s.pipeline.lab.clear_faults()
