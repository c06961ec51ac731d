"""/api/v1/mounts and `vbm mount` end to end: a CIFS share of a real smbd (mounted through the
stand-in for mount(8) as a bind mount of the share's directory), its password write-only and
stored encrypted, a repository location on it, the refusal to remove it or open a repository
under it while unmounted, the remount when the gateway starts, and the audit trail."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from services.gateway.answers.mounts import MountDone, MountList, MountSaved, MountTested
from shared.mounts.probe import is_mounted
from tests.gateway.conftest import MakeApi
from tests.gateway.test_credentials import assert_nowhere
from tests.gateway.test_vcenters import Answers
from tests.plugins.mounts import StandIn
from tests.plugins.smbd import SambaServer
from tests.test_cli_jobs import ROOT


def vbm(data_dir: Path, db_url: str, stand_in: StandIn, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update({"VBM_DATA_DIR": str(data_dir), "VBM_DATABASE_URL": db_url})
    env.update(
        {
            "VBM_MOUNTS__MOUNT_COMMAND": stand_in.mount_command,
            "VBM_MOUNTS__UMOUNT_COMMAND": stand_in.umount_command,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_a_cifs_share_through_the_api_and_the_cli(
    make_api: MakeApi, samba: SambaServer, stand_in: StandIn, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'vbm.db'}"  # the catalog's SQL is tested on both databases elsewhere
    stand_in.map(f"//{samba.host}/{samba.share}", samba.path)
    api = await make_api(db_url, mounts=stand_in.mounts_section())
    call = Answers(api)
    body = {
        "name": "win", "kind": "cifs", "server": samba.host, "share": samba.share, "username": samba.username,
        "password": samba.password, "options": f"port={samba.port}",
    }  # fmt: skip

    # bad input: 422 naming the field, nothing stored
    status, bad = await call("POST", "/mounts", json={**body, "options": "password=x"})
    assert status == 422 and bad["errors"][0]["field"] == "options"
    status, bad = await call("POST", "/mounts", json={**body, "kind": "smb"})
    assert status == 422 and "nfs or cifs" in bad["detail"]
    assert (await call("GET", "/mounts/nope"))[0] == 404

    status, added = await call("POST", "/mounts", json=body)
    assert status == 201, added
    MountSaved.model_validate(added)
    point = Path(added["mount_point"])
    assert added["password"] == "set" and added["state"] == "mounted" and added["mount"]["ok"] is True
    creds = f"credentials={point.parent}/.win.credentials,vers=3.0,uid=0,gid=0,port={samba.port}"
    assert added["command"].endswith(f"-t cifs //127.0.0.1/data {point} -o {creds}")
    assert (await call("POST", "/mounts", json=body))[0] == 409

    status, tested = await call("POST", "/mounts/win/test")
    assert status == 200 and MountTested.model_validate(tested).ok, tested

    # a repository location on it; the share cannot go while it is there
    status, loc = await call("POST", "/locations", json={"name": "onshare", "url": str(point / "repo")})
    assert status == 201, loc
    status, refused = await call("DELETE", "/mounts/win")
    assert status == 409 and "location onshare" in refused["detail"]

    status, done = await call("POST", "/mounts/win/unmount")
    assert status == 200 and MountDone.model_validate(done).state == "unmounted", done
    status, listed = await call("GET", "/mounts")
    assert [m.state for m in MountList.model_validate(listed).mounts] == ["unmounted"]
    # the location cannot be opened now: the local disk underneath is refused
    status, edit = await call("PUT", "/locations/onshare", json={"url": str(point / "repo")})
    assert status == 422 and "mount 'win', which is not mounted" in edit["detail"], edit
    assert os.listdir(point) == [".vbm-mount-point"]  # nothing was written under the mount point

    # the gateway mounts stored shares when it starts
    await make_api(db_url, with_key=False, mounts=stand_in.mounts_section())
    for _ in range(100):
        if is_mounted(point):
            break
        await asyncio.sleep(0.05)
    assert is_mounted(point)

    # the CLI: the same objects, with --json as the API answers
    out = vbm(api.ctx.settings.data_dir, db_url, stand_in, "mount", "unmount", "win", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["state"] == "unmounted", out.stderr
    out = vbm(api.ctx.settings.data_dir, db_url, stand_in, "mount", "mount", "win")
    assert out.returncode == 0 and out.stdout.startswith("mounted:"), out.stderr
    out = vbm(api.ctx.settings.data_dir, db_url, stand_in, "mount", "remove", "win")
    assert out.returncode == 1 and "location onshare" in out.stderr

    assert (await call("DELETE", "/locations/onshare"))[0] == 200
    status, gone = await call("DELETE", "/mounts/win")
    assert status == 200 and gone == {"deleted": "win"} and not is_mounted(point)

    assert call.leaked(samba.password) == []
    assert samba.password not in out.stdout + out.stderr
    assert_nowhere(api, db_url, tmp_path, samba.password)
    status, trail = await call("GET", "/audit?limit=50")
    actions = {(r["action"], r["target"]) for r in trail["records"]}
    for action in ("POST /api/v1/mounts/{name}/unmount", "DELETE /api/v1/mounts/{name}"):
        assert (action, "mount:win") in actions, sorted(actions)
    assert any(r["action"] == "vbm mount mount" for r in trail["records"])
