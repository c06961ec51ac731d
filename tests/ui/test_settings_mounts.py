"""Settings > NFS/CIFS mounts in a real browser: add an NFS share (the stand-in for mount(8)
bind-mounts the directory NFS-Ganesha exports, since this kernel has no NFS client), see it
mounted with the command line vbm runs, test it against Ganesha, use it as a repository location,
back up a lab VM into it, and find the restore point's files in the exported directory; then
unmount it, and the repository is refused instead of being written onto the local disk."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from playwright.async_api import expect
from sqlalchemy import select

from shared.db.models import RestorePointRow
from shared.model.access import Role
from shared.settings import MountSettings
from tests.gateway.conftest import MakeApi
from tests.plugins.ganesha import GaneshaServer
from tests.plugins.mounts import StandIn
from tests.plugins.smbd import SambaServer
from tests.ui.conftest import System
from tests.ui.test_jobs import _api, _get, _login
from tests.ui.test_settings import _post


async def test_add_an_nfs_repository_through_the_mount_manager_and_back_up_to_it(
    system: Callable[..., Awaitable[System]], ganesha: GaneshaServer, stand_in: StandIn
) -> None:
    s = await system()
    stand_in.map(f"127.0.0.1:{ganesha.export}", ganesha.path)
    ctx = s.api.ctx
    ctx.settings = ctx.settings.model_copy(update={"mounts": MountSettings(**stand_in.mounts_section())})
    page = await s.logged_in(Role.ADMIN)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    await page.goto("/settings")
    await page.get_by_role("link", name="NFS/CIFS mounts").click()
    await page.wait_for_url("**/settings/mounts")
    await expect(page.get_by_text("No mounts yet.")).to_be_visible()
    await page.locator("#name").fill("nas")
    await page.locator("#kind").select_option("nfs")
    await page.locator("#server").fill("127.0.0.1")
    await page.locator("#export").fill(ganesha.export)
    await page.locator("#version").fill("4")
    await page.locator("#options").fill(f"hard,port={ganesha.port}")
    await page.get_by_role("button", name="Add and mount").click()
    row = page.locator("#mount-nas")
    await expect(row.locator("[data-state=mounted]")).to_be_visible()
    await expect(row.get_by_role("status")).to_contain_text("Mount: done")
    point = ctx.settings.data_dir.resolve() / "mounts" / "nas"
    command = f"-t nfs -o nfsvers=4,hard,port={ganesha.port} 127.0.0.1:/export {point}"
    await expect(page.locator("#command-nas code.command")).to_contain_text(command)

    await row.get_by_role("button", name="Test").click()  # Ganesha through libnfs, nothing mounted
    tested = page.locator("#mount-nas").get_by_role("status")
    await expect(tested).to_contain_text("Test: done", timeout=15_000)
    await s.shot(page, "settings-mounts")  # docs/ui/settings-mounts.png is a copy

    row = page.locator("#mount-nas")
    await row.get_by_text("Use as repository").click()
    await row.get_by_label("Location name").fill("nas-repo")
    await row.get_by_role("button", name="Add repository location").click()
    await page.wait_for_url("**/settings/repositories#loc-nas-repo")
    await expect(page.locator("#loc-nas-repo")).to_contain_text(str(point / "nas-repo"))

    # a backup of a lab VM into it (the job made through the API, as the jobs' own tests do)
    repository = str(point / "nas-repo")
    body = {"name": "to-nas", "vcenter": "lab", "vms": [{"name": "db"}], "repository": repository}
    status, job = await s.api.call("POST", "/jobs", json=body)
    assert status == 201, job
    status, started = await s.api.call("POST", f"/jobs/{job['id']}/run")
    assert status == 202, started
    run = await s.pipeline.wait_run(started["run_id"], timeout=25)
    assert run.state == "succeeded", s.pipeline.dump(started["run_id"])
    on_server = ganesha.path / "nas-repo"
    assert (on_server / "config").is_file()
    with s.pipeline.sessions() as session:
        points = [rp.id for rp in session.scalars(select(RestorePointRow))]
    assert len(points) == 1 and (on_server / "manifests" / points[0]).is_file()  # the restore point's files
    assert [c for c in on_server.joinpath("chunks").rglob("*") if c.is_file()]

    # unmounted: the repository is refused, nothing lands on the local disk underneath
    await page.goto("/settings/mounts")
    await page.locator("#mount-nas").get_by_role("button", name="Unmount").click()
    await expect(page.locator("#mount-nas [data-state=unmounted]")).to_be_visible()
    status, refused = await s.api.call("PUT", "/locations/nas-repo", json={"url": str(point / "nas-repo")})
    assert status == 422 and "not mounted" in refused["detail"]
    assert os.listdir(point) == [".vbm-mount-point"]
    await page.goto("/audit?user=ada")  # the page's actions, each with who did it
    rows = page.locator("table.audit tbody tr")
    for action in ("POST /settings/mounts", "/settings/mounts/{name}/test", "/settings/mounts/{name}/use",
                   "/settings/mounts/{name}/unmount"):  # fmt: skip
        await expect(rows.filter(has_text=action).first).to_contain_text("ada")
    await expect(rows.filter(has_text="/unmount")).to_contain_text("mount:nas")
    assert errors == [], errors


async def test_the_mounts_page_over_http(
    make_api: MakeApi, tmp_path: Path, samba: SambaServer, stand_in: StandIn
) -> None:
    """Bad input re-renders the form with the field's error; a CIFS share whose password Samba
    refuses says so beside it; a share with a repository on it cannot go; roles."""
    api = await _api(make_api, tmp_path)
    api.ctx.settings = api.ctx.settings.model_copy(
        update={"mounts": MountSettings(**stand_in.mounts_section())}
    )
    csrf = await _login(api, Role.ADMIN)
    status, page = await _get(api, "/settings")
    assert 'href="/settings/mounts"' in page
    status, page = await _get(api, "/settings/mounts")
    assert status == 200 and "No mounts yet." in page and "Add a mount" in page

    form = {"csrf_token": csrf, "name": "win", "kind": "cifs", "server": samba.host,
            "share": samba.share, "username": samba.username, "password": "wrong-pw-1",
            "options": f"port={samba.port}"}  # fmt: skip
    status, page, _ = await _post(api, "/settings/mounts", form | {"options": "password=x"})
    assert status == 422 and "<title>Error: " in page and 'aria-describedby="options-error"' in page
    assert 'value="win"' in page and "wrong-pw-1" not in page
    status, page, _ = await _post(api, "/settings/mounts", form | {"server": "a b"})
    assert status == 422 and 'aria-describedby="server-error"' in page

    stand_in.map(f"//{samba.host}/{samba.share}", samba.path)
    status, page, _ = await _post(api, "/settings/mounts", form)
    assert status == 200 and "Mount: done" in page and "wrong-pw-1" not in page
    assert "credentials=" in page and "password set" in page
    status, page, _ = await _post(api, "/settings/mounts/win/test", {"csrf_token": csrf})
    assert status == 200 and "Test: failed. auth: 127.0.0.1 refused the login of &#39;backup&#39;" in page

    status, page = await _get(api, "/settings/mounts/win/edit")
    assert status == 200 and "type a new one to replace it" in page and f'value="port={samba.port}"' in page
    change = {"csrf_token": csrf, "server": samba.host, "share": samba.share, "username": samba.username,
              "options": f"port={samba.port},seal"}  # fmt: skip
    status, page, _ = await _post(api, "/settings/mounts/win/edit", change | {"version": "9"})
    assert status == 422 and 'aria-describedby="version-error"' in page and 'value="9"' in page
    status, _, where = await _post(api, "/settings/mounts/win/edit", change)
    assert status == 303 and where == "/settings/mounts#mount-win"
    status, page = await _get(api, "/settings/mounts")
    assert f"port={samba.port},seal" in page and "password set" in page  # the password kept

    use = {"csrf_token": csrf, "location": "winrepo"}
    status, _, where = await _post(api, "/settings/mounts/win/use", use)
    assert status == 303 and where == "/settings/repositories#loc-winrepo"
    status, page, _ = await _post(api, "/settings/mounts/win/use", use | {"location": "../x"})
    assert status == 422 and "Location name:" in page
    delete = {"csrf_token": csrf, "confirm_name": "win"}
    status, page, _ = await _post(api, "/settings/mounts/win/delete", delete)
    assert status == 409 and "location winrepo" in page and "Nothing was removed" in page
    status, page, _ = await _post(api, "/settings/mounts/win/unmount", {"csrf_token": csrf})
    assert status == 200 and 'data-state="unmounted"' in page and "Unmount: done" in page
    status, page, _ = await _post(api, "/settings/mounts/nope/mount", {"csrf_token": csrf})
    assert status == 404 and "<html" in page

    for role in (Role.VIEWER, Role.OPERATOR):
        csrf = await _login(api, role)
        status, page = await _get(api, "/settings/mounts")
        assert status == 200 and "win" in page and "Add a mount" not in page and '/mount"' not in page
        for action in ("", "/win/mount", "/win/unmount", "/win/test", "/win/use", "/win/delete", "/win/edit"):
            status, _, _ = await _post(api, f"/settings/mounts{action}", {"csrf_token": csrf, "name": "x"})
            assert status == 403, (role, action)
