"""`vbm vcenter add|list|test|rm` and `vbm secrets rotate` through real processes, on a real
database and the lab (the password given on stdin, never printed, stored encrypted)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lab.launcher import Lab, LabSpec
from services.gateway.answers.settings import Deleted, VCenterAnswer, VCenterList, VCenterSaved, VCenterTested
from tests.plugins.lab import DEFAULT_SPEC
from tests.test_cli_jobs import ROOT, env_for


def vbm(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=env, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_vcenter_add_list_test_rotate_rm(tmp_path: Path, lab_factory: Callable[[LabSpec], Lab]) -> None:
    lab = lab_factory(dataclasses.replace(DEFAULT_SPEC, password="Cli-canary-81b2f4"))
    db = tmp_path / "cli.db"
    env = env_for(tmp_path, f"sqlite:///{db}")
    add = ["vcenter", "add", "lab2", "--url", lab.sdk_url, "--username", lab.username, "--password-stdin"]
    out = vbm(env, *add, stdin="wrong-password\n")
    assert out.returncode == 1 and "connection test failed (credentials)" in out.stderr, out
    assert "nothing was saved" in out.stderr
    out = vbm(env, *add, stdin=lab.password + "\n")
    assert out.returncode == 0 and "vCenter lab2 added" in out.stdout, out
    out = vbm(env, "vcenter", "edit", "lab2", "--no-verify-tls", "--skip-test", "--json")
    saved = VCenterSaved.model_validate_json(out.stdout)  # --json prints what the API answers
    assert (saved.verify_tls, saved.test.kind) == (False, "skipped"), out
    out = vbm(env, *add, stdin=lab.password + "\n")
    assert out.returncode == 1 and "a vCenter named 'lab2' exists" in out.stderr
    out = vbm(env, "vcenter", "add", "dns", "--url", "https://no-such-host.invalid/sdk", "--username", "u",
              "--password-stdin", stdin="p\n")  # fmt: skip
    assert out.returncode == 1 and "(dns)" in out.stderr

    out = vbm(env, "vcenter", "list", "--json")
    assert out.returncode == 0, out
    [view] = VCenterList.model_validate(json.loads(out.stdout)).vcenters
    assert view.name == "lab2" and view.password == "set" and view.source == "api"
    assert lab.password not in out.stdout
    assert VCenterAnswer.model_validate_json(vbm(env, "vcenter", "show", "lab2", "--json").stdout) == view
    out = vbm(env, "vcenter", "test", "lab2")
    assert out.returncode == 0 and "connected to lab2" in out.stdout, out
    assert VCenterTested.model_validate_json(vbm(env, "vcenter", "test", "lab2", "--json").stdout).ok

    out = vbm(env, "secrets", "rotate")
    assert out.returncode == 0 and "1 secret(s) re-encrypted" in out.stdout, out
    kept = list((tmp_path / "data").glob("secret.key.old-*"))
    assert len(kept) == 1 and str(kept[0]) in out.stdout
    out = vbm(env, "vcenter", "test", "lab2")  # readable under the new key
    assert out.returncode == 0, out

    key = tmp_path / "data" / "secret.key"
    good = key.read_bytes()
    key.unlink()  # the key lost: the vCenter is named, no traceback
    out = vbm(env, "vcenter", "test", "lab2")
    assert out.returncode == 1 and "the password of vCenter 'lab2' cannot be decrypted" in out.stderr
    assert "Traceback" not in out.stderr
    kept[0].rename(tmp_path / "data" / "secret.key")  # the old key does not open it either
    assert vbm(env, "vcenter", "test", "lab2").returncode == 1
    key.write_bytes(good)  # restored (the file keeps mode 0600)

    out = vbm(env, "job", "create", "--name", "on-lab2", "--vcenter", "lab2", "--vm", "vm1")
    assert out.returncode == 0, out  # a stored vCenter serves jobs as a configured one does
    out = vbm(env, "vcenter", "rm", "lab2")
    assert out.returncode == 1 and "used by job(s) on-lab2" in out.stderr, out
    assert vbm(env, "job", "delete", "on-lab2", "--yes").returncode == 0
    out = vbm(env, "vcenter", "rm", "lab2", "--json")
    assert Deleted.model_validate_json(out.stdout).deleted == "lab2", out
    out = vbm(env, "vcenter", "rm", "lab2")
    assert out.returncode == 1 and "no vCenter 'lab2'" in out.stderr
    assert lab.password.encode() not in db.read_bytes()
