"""The restore wizard: over HTTP with seeded restore points (each step renders, Back keeps the
answers, a point that failed verification is refused with its reason, validation in the form,
a double submit starts one restore, the roles), and in a real browser against vbm on the lab
(a lab backup restored as a new VM through the wizard, the restore reaching done live, the new
VM in the lab with byte-identical disks)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect
from sqlalchemy import select

from shared.catalog import restore_wizard, users
from shared.db.models import Restore, RestorePointRow
from shared.model.access import Role
from shared.runtime.service import utcnow
from shared.settings import VCenterSettings
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi
from tests.pipeline.test_restore import folder, vm_names
from tests.ui.conftest import System
from tests.ui.test_vms_backups import DOWN, HTML, PASSWORD, PEOPLE, T0, _log_in


async def _seeded(make_api: MakeApi, tmp_path: Path, vcenters: tuple[VCenterSettings, ...] = (DOWN,)) -> Api:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", vcenters=vcenters)
    now = utcnow()
    with api.ctx.sessions.begin() as s:
        for role, name in PEOPLE.items():
            users.add(s, name, role, now, SecuritySettings(), PASSWORD)
        for i, state in enumerate(("ok", "failed")):
            s.add(
                RestorePointRow(
                    id=f"rp-{i}", job_id=None, vcenter="far", vm_moref="vm-1", vm_name="web-1",
                    repository=str(tmp_path / "nowhere"), kind="full",
                    disks=[{"key": 2000, "capacity": 1 << 30}], logical_bytes=1 << 30,
                    bytes_read=1 << 20, bytes_stored=1 << 20,
                    started_at=T0 + timedelta(hours=i), finished_at=T0 + timedelta(hours=i, minutes=5),
                    verify_state=state, verify_problems=["chunk 3 is corrupt"] if state == "failed" else [],
                )
            )  # fmt: skip
    return api


async def _get(c: TestClient, url: str, status: int = 200) -> str:
    async with c.get(url, headers=HTML, allow_redirects=False) as resp:
        text = await resp.text()
        assert resp.status == status, (url, resp.status, text[:600])
        return text


async def test_wizard_steps_back_refusal_validation_and_one_start(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _seeded(make_api, tmp_path)
    c = api.client
    token = await _log_in(c, Role.OPERATOR)
    html = await _get(c, "/restore?q=WEB")
    assert 'href="/restore/far/vm-1/points"' in html and "data-autofocus" in html
    assert "No VM with restore points" in await _get(c, "/restore?q=nothing-like-it")
    html = await _get(c, "/restore/far/vm-1/points")
    assert 'href="/restore/point/rp-0/kind"' in html
    assert "Refused: This restore point failed verification (chunk 3 is corrupt)" in html
    assert 'href="/restore/point/rp-1/kind"' not in html
    assert 'href="/restore/point/rp-0/kind">Restore</a>' in await _get(c, "/backups/rp-0")
    refused = await _get(c, "/restore/point/rp-1/kind", 409)
    assert "chunk 3 is corrupt" in refused and "<title>Error:" in refused

    answers = {"mode": "new_vm", "name": "web-1-copy", "datastore": "ds9", "network": "lan", "power_on": "on"}
    html = await _get(c, "/restore/point/rp-0/kind?" + urlencode(answers))
    assert 'value="new_vm" checked' in html and 'name="name" value="web-1-copy"' in html  # Back keeps them
    html = await _get(c, "/restore/point/rp-0/where?" + urlencode(answers))
    assert 'value="web-1-copy"' in html and 'value="ds9"' in html and "checked" in html
    assert "could not be asked" in html  # the vCenter is down: free text, checked by the mover
    assert "/restore/point/rp-0/kind?" in html and "name=web-1-copy" in html  # Back carries them

    bad = await _get(
        c, "/restore/point/rp-0/summary?" + urlencode({**answers, "name": "a/b", "datastore": ""}), 422
    )
    assert "<title>Error:" in bad and 'role="alert"' in bad and 'aria-invalid="true"' in bad
    assert "a VM name cannot hold" in bad and "Choose the datastore" in bad and 'value="a/b"' in bad
    in_place = {"mode": "in_place", "confirm_name": "web-2", "method": "full"}
    bad = await _get(c, "/restore/point/rp-0/summary?" + urlencode(in_place), 422)
    assert "Type the VM&#39;s name, web-1, exactly" in bad and "only differing blocks are written" in bad

    html = await _get(c, "/restore/point/rp-0/summary?" + urlencode(answers))
    key = re.search(r'name="idempotency_key" value="([^"]+)"', html)
    assert key and 'name="name" value="web-1-copy"' in html and "/restore/point/rp-0/where?" in html
    form = {**answers, "csrf_token": token, "idempotency_key": key[1]}
    places = []
    for _ in range(2):  # a double submit: one restore
        async with c.post("/restore/point/rp-0/start", data=form, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            places.append(resp.headers["Location"])
    assert places[0] == places[1] and places[0].startswith("/restores/restore-")
    with api.ctx.sessions() as s:
        (row,) = s.scalars(select(Restore)).all()
        assert row.mode == "new_vm" and row.target["name"] == "web-1-copy" and row.target["power_on"]
    html = await _get(c, places[0])
    assert "Restore of web-1-copy" in html and "Cancel the restore" in html and "restore.js" in html
    assert 'id="restore-panel"' in await _get(c, places[0] + "/panel")
    async with c.post("/restore/point/rp-1/start", data={**form, "idempotency_key": "k2"}) as resp:
        assert resp.status == 409 and "chunk 3 is corrupt" in await resp.text()
    async with c.post(places[0] + "/cancel", data={"csrf_token": token}, allow_redirects=False) as resp:
        assert resp.status == 303
    with api.ctx.sessions() as s:
        assert s.scalars(select(Restore)).one().cancel_requested

    for odd in (
        "/restore/point/%00/kind",
        "/restore/point/rp-0/where?mode=bogus",
        "/restores/%01",
        "/restore/far/vm-9/points",
    ):
        async with c.get(odd, headers=HTML) as resp:
            assert 400 <= resp.status < 500, (odd, resp.status)

    token = await _log_in(c, Role.VIEWER)
    await _get(c, "/restore", 403)
    html = await _get(c, places[0])
    assert "Cancel the restore" not in html and 'href="/restore"' not in html
    async with c.post("/restore/point/rp-0/start", data={**form, "csrf_token": token}) as resp:
        assert resp.status == 403


async def test_restore_a_lab_backup_as_a_new_vm_live(system: Callable[..., Awaitable[System]]) -> None:
    s = await system()
    job_id = s.pipeline.create_job("nightly", ["web"])
    status, started = await s.api.call("POST", f"/jobs/{job_id}/run")
    assert status == 202, started
    run = await s.pipeline.wait_run(started["run_id"])
    assert run.state == "succeeded", s.pipeline.dump(run.id)
    content = {k: s.pipeline.guest_disk("web", k) for k in (2000, 2001)}

    page = await s.logged_in(Role.ADMIN)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Restore", exact=True).click()
    await page.get_by_label("VM name").fill("web")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name="web", exact=True).click()
    await expect(page.get_by_role("heading", name="Restore web: which restore point?")).to_be_focused()
    await page.get_by_role("link", name="Choose").click()
    await page.get_by_role("button", name="Next").click()  # a new VM, the default
    await expect(page.get_by_role("heading", name=re.compile("Restore web: A new VM"))).to_be_focused()
    await page.get_by_label("The VM's name").fill("web-from-ui")
    await page.get_by_label("Datastore").select_option("LocalDS_0")
    await expect(page.get_by_label("Datastore")).to_contain_text("free of")
    await page.get_by_label("Network").select_option("VM Network")
    await page.get_by_role("group", name="Disk format").get_by_label("Thick").check()  # the source is thin
    await s.shot(page, "restore-wizard")
    await page.get_by_role("button", name="Next").click()
    await expect(page.get_by_role("heading", name="Restore web: summary")).to_be_visible()
    await expect(page.locator("dl.facts")).to_contain_text("Thick (the whole capacity")
    await page.get_by_role("link", name="Back", exact=True).click()  # Back keeps the answers
    await expect(page.get_by_label("The VM's name")).to_have_value("web-from-ui")
    await page.get_by_role("button", name="Next").click()
    await page.get_by_role("button", name="Start the restore").click()
    await page.wait_for_url("**/restores/restore-*")
    await page.evaluate("window.vbmSamePage = true")
    panel = page.locator("#restore-panel")
    await expect(panel.locator("#restore-state")).to_have_text("Succeeded", timeout=60_000)
    await expect(panel).to_contain_text("VM web-from-ui is restored")
    link = panel.get_by_role("link", name="web-from-ui")  # the result links the new VM's page
    await expect(link).to_have_attribute("href", re.compile(r"^/vms/lab/vm-\d+$"))
    assert await page.evaluate("window.vbmSamePage === true")  # live, not a reload
    await s.shot(page, "restore-live")
    restore_id = page.url.rsplit("/", 1)[-1]
    assert "web-from-ui" in vm_names(s.pipeline)
    assert (folder(s.pipeline, "web-from-ui") / "web-from-ui-flat.vmdk").read_bytes() == content[2000]
    assert (folder(s.pipeline, "web-from-ui") / "web-from-ui_1-flat.vmdk").read_bytes() == content[2001]
    # the restored disks are thick, as asked: their descriptors do not say thin
    assert "thinProvisioned" not in (folder(s.pipeline, "web-from-ui") / "web-from-ui.vmdk").read_text()
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Restores", exact=True).click()
    row = page.locator("#restores-rows tr", has_text="web-from-ui")
    await expect(row).to_contain_text("Succeeded")
    await expect(row).to_contain_text("New VM")
    await expect(row).to_contain_text("ada")
    await s.shot(page, "restores")
    await page.goto("/audit?user=ada")  # who asked for it, in the audit log
    started = page.locator("table.audit tbody tr", has_text="/restore/point/{rp_id}/start")
    await expect(started.first).to_contain_text("ada")
    await expect(started.first).to_contain_text(f"restore:{restore_id}")
    assert errors == [], errors


PLACES = {
    "dc1": {
        "datastores": [
            {"name": "big", "capacity": 10 << 30, "free": 5 << 30, "accessible": True},
            {"name": "tiny", "capacity": 1 << 30, "free": 1 << 20, "accessible": True},
        ],
        "networks": ["lan", "isolated"],
        "computes": ["cluster-1", "esx-1"],
        "vm_names": ["web-1", "taken"],
    }
}


async def test_placement_choices_and_impossible_ones(
    make_api: MakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_wizard, "choices", lambda settings, vcenter: PLACES)
    api = await _seeded(make_api, tmp_path)
    c = api.client
    await _log_in(c, Role.ADMIN)
    html = await _get(c, "/restore/point/rp-0/where?mode=new_vm")
    assert "big: 5.0 GiB free of 10.0 GiB" in html and "<option>esx-1</option>" in html
    assert "<option>isolated</option>" in html and "could not be asked" not in html
    wanted = {
        "mode": "new_vm",
        "name": "taken",
        "datastore": "tiny",
        "network": "lan",
        "resource_pool": "esx-1",
    }
    bad = await _get(c, "/restore/point/rp-0/summary?" + urlencode(wanted), 422)
    assert "A VM named &#39;taken&#39; exists already" in bad
    assert "Datastore tiny has 1.0 MiB free; the VM&#39;s disks need 1.0 GiB" in bad
    assert '<option value="tiny" selected>' in bad and "<option selected>esx-1</option>" in bad
    html = await _get(
        c,
        "/restore/point/rp-0/summary?"
        + urlencode({**wanted, "name": "new", "datastore": "big", "folder": "r/w"}),
    )
    assert "Host or cluster</dt><dd>esx-1" in html and "Folder</dt><dd>r/w" in html
    for mode, text in (("instant", "Instant recovery"), ("test", "(isolated)"), ("download", "/disks/2000")):
        assert text in await _get(c, f"/restore/point/rp-0/where?mode={mode}")
    bad = await _get(c, "/restore/point/rp-0/summary?mode=test", 422)
    assert "Choose the datastore" in bad and "Choose the network" in bad
