"""The Restores list over HTTP (newest first, filters in the URL, paging, the rows fragment the
live refresh reads, a bad filter, the roles) and the wizard's new-VM choices added to it: the
disk format (radio group, summary, the free-space check by format, a bad value) and another
vCenter than the VM's own (its placement fields re-rendered, checked, and the restore going
there)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from shared.catalog import restore_wizard
from shared.db.models import Restore
from shared.model.access import Role
from shared.settings import VCenterSettings
from tests.gateway.conftest import Api, MakeApi
from tests.ui.test_restore import PLACES, _get, _seeded
from tests.ui.test_vms_backups import DOWN, T0, _log_in

NEAR = VCenterSettings(name="near", url="https://127.0.0.1:9/sdk", username="u", password="p")
NEAR_PLACES = {
    "dc-near": {
        "datastores": [{"name": "near-ds", "capacity": 8 << 30, "free": 4 << 30, "accessible": True}],
        "networks": ["near-lan"],
        "computes": ["near-esx"],
        "vm_names": [],
    }
}


def _restore(i: int, state: str, mode: str, rp: str, **target: Any) -> Restore:
    at = T0 + timedelta(minutes=i)
    return Restore(
        id=f"restore-{i:02d}", restore_point_id=rp, repository="/r", vcenter="far", mode=mode,
        target={"vcenter": "far", "datastore": "ds1", "name": f"copy-{i}", **target}, state=state,
        phase="uploading" if state == "running" else "done", generation=1, bytes_done=256 << 20 if
        state == "running" else 0, bytes_total=1 << 30, rate=0.0, created={}, cancel_requested=False,
        created_at=at, started_at=at, updated_at=at,
        finished_at=at + timedelta(seconds=75) if state in ("succeeded", "failed") else None,
        error="no room on ds1" if state == "failed" else None,
    )  # fmt: skip


async def _with_restores(make_api: MakeApi, tmp_path: Path) -> Api:
    api = await _seeded(make_api, tmp_path)
    with api.ctx.sessions.begin() as s:
        s.add(_restore(1, "succeeded", "new_vm", "rp-0", requested_by="ada", disk_format="thick"))
        s.add(_restore(2, "failed", "test", "rp-0"))
        s.add(_restore(3, "running", "new_vm", "rp-0", requested_by="otto (key 12ab)"))
        s.add(_restore(4, "succeeded", "in_place", "rp-gone"))
    return api


async def test_the_restores_list(make_api: MakeApi, tmp_path: Path) -> None:
    api = await _with_restores(make_api, tmp_path)
    c = api.client
    async with c.get("/restores", allow_redirects=False) as resp:
        assert resp.status in (302, 303) and "/login" in resp.headers["Location"]
    await _log_in(c, Role.VIEWER)
    html = await _get(c, "/restores")
    ids = re.findall(r'data-restore-id="([^"]+)"', html)
    assert ids == ["restore-04", "restore-03", "restore-02", "restore-01"]  # newest first
    assert "4 restores, newest first" in html and "data-live-restores" in html and "restores.js" in html
    assert 'href="/restores" aria-current="page"' in html or 'aria-current="page">Restores' in html
    assert "Restore test" in html and "In place" in html and "web-1" in html
    assert "ada" in html and "otto (key 12ab)" in html and "1 min 15 s" in html
    assert 'aria-valuenow="25"' in html  # the running one: 256 MiB of 1 GiB
    assert "no room on ds1" in html and 'href="/backups/rp-0"' in html
    assert 'href="/restore"' not in html  # a viewer may not restore: no button, no nav entry
    assert "Copy-3" not in html and "copy-3" in html

    html = await _get(c, "/restores?state=succeeded&mode=new_vm")
    assert re.findall(r'data-restore-id="([^"]+)"', html) == ["restore-01"]
    assert '<option value="succeeded" selected>' in html and '<option value="new_vm" selected>' in html
    assert "1 restore matches the filters" in html and "Clear the filters" in html
    assert re.findall(r'data-restore-id="([^"]+)"', await _get(c, "/restores?vm=WEB")) == [
        "restore-03", "restore-02", "restore-01",
    ]  # fmt: skip
    assert "No restore matches these filters" in await _get(c, "/restores?vm=nothing-like-it")

    html = await _get(c, "/restores?limit=2&vm=web")
    assert re.findall(r'data-restore-id="([^"]+)"', html) == ["restore-03", "restore-02"]
    following = re.search(r'<a rel="next" href="([^"]+)"', html)
    assert following and "vm=web" in following[1] and "cursor=" in following[1]
    html = await _get(c, following[1].replace("&amp;", "&"))
    assert re.findall(r'data-restore-id="([^"]+)"', html) == ["restore-01"] and "First page" in html

    rows = await _get(c, "/restores/rows?state=running")
    assert rows.lstrip().startswith('<tbody id="restores-rows">') and "restore-03" in rows
    assert "restore-01" not in rows and "<html" not in rows
    for bad, field in (("state=lost", "state"), ("mode=sideways", "mode"), ("colour=red", "colour")):
        page = await _get(c, f"/restores?{bad}", 422)
        assert field in page and "<title>Error" in page, page[:400]
    status, listing = await api.call("GET", "/restores?vm=web&state=succeeded")
    assert status == 200 and [r["id"] for r in listing["restores"]] == ["restore-01"]

    await _log_in(c, Role.OPERATOR)
    html = await _get(c, "/restores")
    assert 'href="/restore" class="button primary">Restore a VM' in html
    assert 'href="/restores"' in await _get(c, "/restore")  # linked from the Restore step 1 too


def _placed(settings: Any, vcenter: str) -> dict[str, Any]:
    return {"far": PLACES, "near": NEAR_PLACES}[vcenter]


async def test_disk_format_and_another_vcenter_in_the_wizard(
    make_api: MakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_wizard, "choices", _placed)
    api = await _seeded(make_api, tmp_path, vcenters=(DOWN, NEAR))
    c = api.client
    token = await _log_in(c, Role.ADMIN)
    html = await _get(c, "/restore/point/rp-0/where?mode=new_vm")
    assert "<legend>Disk format</legend>" in html and "thick writes the whole capacity" in html.lower()
    assert 'value="as_source" checked' in html and 'value="thin"' in html and 'value="thick"' in html
    assert '<select id="vcenter" name="vcenter"' in html and 'hx-get="/restore/point/rp-0/place"' in html
    assert "far (the VM's own)</option>" in html and '<option value="near">near</option>' in html
    assert "big: 5.0 GiB free" in html and "near-ds" not in html
    for mode in ("test", "instant", "in_place"):  # a new VM's choices only
        other = await _get(c, f"/restore/point/rp-0/where?mode={mode}")
        assert "Disk format" not in other and 'id="vcenter"' not in other

    place = await _get(c, "/restore/point/rp-0/place?" + urlencode({"mode": "new_vm", "vcenter": "near"}))
    assert place.lstrip().startswith('<div id="place"') and "<html" not in place
    assert "near-ds: 4.0 GiB free" in place and "<option>near-lan</option>" in place and "big" not in place
    place = await _get(c, "/restore/point/rp-0/place?" + urlencode({"mode": "new_vm", "vcenter": "vc9"}))
    assert "big: 5.0 GiB free" in place  # an unknown one: the VM's own vCenter's places

    base = {"mode": "new_vm", "name": "new", "datastore": "tiny", "network": "lan"}
    bad = await _get(c, "/restore/point/rp-0/summary?" + urlencode({**base, "disk_format": "thick"}), 422)
    assert "Datastore tiny has 1.0 MiB free; the VM&#39;s disks need 1.0 GiB written thick" in bad
    assert "or the thin disk format" in bad and 'value="thick" checked' in bad
    html = await _get(c, "/restore/point/rp-0/summary?" + urlencode({**base, "disk_format": "thin"}))
    assert "Disk format</dt><dd>Thin" in html  # thin: only the data, checked by the mover
    bad = await _get(c, "/restore/point/rp-0/summary?" + urlencode({**base, "disk_format": "eager"}), 422)
    assert 'href="#disk_format"' in bad and "&#39;thick&#39;" in bad
    bad = await _get(c, "/restore/point/rp-0/summary?" + urlencode({**base, "vcenter": "vc9"}), 422)
    assert "&#39;vc9&#39; is not a configured vCenter" in bad

    there = {"mode": "new_vm", "name": "web-near", "vcenter": "near", "datacenter": "dc-near",
             "datastore": "near-ds", "network": "near-lan", "disk_format": "thick"}  # fmt: skip
    bad = await _get(c, "/restore/point/rp-0/summary?" + urlencode({**there, "network": "lan"}), 422)
    assert "No network &#39;lan&#39; here" in bad  # checked against the chosen vCenter's places
    html = await _get(c, "/restore/point/rp-0/summary?" + urlencode(there))
    assert "vCenter</dt><dd>near (not the VM's own, far)" in html and "Disk format</dt><dd>Thick" in html
    key = re.search(r'name="idempotency_key" value="([^"]+)"', html)
    assert key
    form = {**there, "csrf_token": token, "idempotency_key": key[1]}
    async with c.post("/restore/point/rp-0/start", data=form, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        place_url = resp.headers["Location"]
    with api.ctx.sessions() as s:
        row = s.scalars(select(Restore)).one()
        assert row.vcenter == "near" and row.target["vcenter"] == "near"
        assert row.target["disk_format"] == "thick" and row.target["requested_by"] == "ada"
    html = await _get(c, place_url)
    assert "Disk format</dt><dd>thick" in html and "Asked by</dt><dd>ada" in html
    assert "web-near" in await _get(c, "/restores")
