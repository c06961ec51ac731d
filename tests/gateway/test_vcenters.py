"""/api/v1/vcenters against the lab: add, list, test, change, delete; what a failed connection
test says (DNS, TCP, TLS, credentials, not a vCenter); configured ones are read only; the
password never leaves, and is stored encrypted; a lost key names the vCenter, never a 500."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from sqlalchemy import select

from lab.launcher import Lab, LabSpec
from services.gateway.answers.settings import Deleted, VCenterAnswer, VCenterList, VCenterSaved, VCenterTested
from shared.db.models import VCenterRow
from tests.gateway.conftest import Api, MakeApi, lab_vcenter
from tests.plugins.lab import DEFAULT_SPEC
from tests.plugins.procs import free_port

CANARY = "Canary-pw-5e1f0c7d9a"


@pytest.fixture
def canary_lab(lab_factory: Any) -> Lab:
    """A second lab whose password is the canary (so that every answer can be searched for it)."""
    spec: LabSpec = dataclasses.replace(DEFAULT_SPEC, password=CANARY)
    lab: Lab = lab_factory(spec)
    return lab


def stored(lab: Lab, name: str = "lab2", **changes: Any) -> dict[str, Any]:
    return {"name": name, "url": lab.sdk_url, "username": lab.username, "password": lab.password, **changes}


def files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


class Answers:
    """Every answer of a test, to search them all for the password at the end."""

    def __init__(self, api: Api) -> None:
        self.api, self.seen = api, []  # type: ignore[var-annotated]

    async def __call__(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body = await self.api.call(method, path, **kwargs)
        self.seen.append(body)
        return status, body

    def leaked(self, secret: str) -> list[Any]:
        return [b for b in self.seen if secret in str(b)]


async def test_add_list_test_change_delete(make_api: MakeApi, db_url: str, lab: Lab, canary_lab: Lab) -> None:
    api = await make_api(db_url, (lab_vcenter(lab),))
    call = Answers(api)
    status, added = await call("POST", "/vcenters", json=stored(canary_lab))
    assert status == 201, added
    assert added["password"] == "set" and added["source"] == "api" and added["test"]["ok"] is True
    assert added["test"]["kind"] == "ok" and added["test"]["server"]
    VCenterSaved.model_validate(added)  # the answer models of the OpenAPI document hold
    status, listed = await call("GET", "/vcenters")
    assert status == 200 and [v.name for v in VCenterList.model_validate(listed).vcenters] == ["lab", "lab2"]
    configured = listed["vcenters"][0]
    assert configured["source"] == "env" and configured["password"] == "set"
    status, one = await call("GET", "/vcenters/lab2")
    assert status == 200 and VCenterAnswer.model_validate(one).url == canary_lab.sdk_url and one["verify_tls"]
    status, tested = await call("POST", "/vcenters/lab2/test")
    assert status == 200 and VCenterTested.model_validate(tested).ok is True and tested["name"] == "lab2"

    # the stored vCenter is usable at once: VMs of both, and a job on it
    status, vms = await call("GET", "/vms")
    assert status == 200 and vms["vcenters"] == ["lab", "lab2"] and vms["unreachable"] == []
    assert sorted((v["vcenter"], v["name"]) for v in vms["vms"]) == [
        ("lab", "vm1"), ("lab", "vm2"), ("lab2", "vm1"), ("lab2", "vm2"),
    ]  # fmt: skip
    status, job = await call("POST", "/jobs", json={"name": "on-lab2", "vcenter": "lab", "vms": [
        {"name": "vm1"}, {"name": "vm2", "vcenter": "lab2"}]})  # fmt: skip
    assert status == 201, job

    # change: partial, password kept; a wrong one is refused by the test and nothing is saved
    status, changed = await call("PUT", "/vcenters/lab2", json={"hotadd_proxy": "vbm-proxy"})
    assert status == 200 and changed["hotadd_proxy"] == "vbm-proxy" and changed["test"]["ok"] is True
    status, refused = await call("PUT", "/vcenters/lab2", json={"password": "wrong-one"})
    assert status == 422 and refused["test"]["kind"] == "credentials", refused
    assert refused["detail"].startswith("password: connection test failed (credentials)")
    status, tested = await call("POST", "/vcenters/lab2/test")
    assert tested["ok"] is True  # the stored password is still the right one
    status, skipped = await call("PUT", "/vcenters/lab2?skip_test=true", json={"password": "wrong-one"})
    assert status == 200 and VCenterSaved.model_validate(skipped).test.kind == "skipped"
    status, tested = await call("POST", "/vcenters/lab2/test")
    assert status == 200 and tested["ok"] is False and tested["kind"] == "credentials"
    status, _ = await call("PUT", "/vcenters/lab2", json={"password": CANARY})
    assert status == 200

    # delete: refused while a job names it, and configured ones never
    status, problem = await call("DELETE", "/vcenters/lab2")
    assert status == 409 and "on-lab2" in problem["detail"], problem
    status, problem = await call("DELETE", "/vcenters/lab")
    assert status == 409 and "configuration" in problem["detail"]
    status, problem = await call("PUT", "/vcenters/lab", json={"username": "x"})
    assert status == 409 and "configured" in problem["detail"]
    status, problem = await call("POST", "/vcenters", json=stored(lab, name="lab"))
    assert status == 409
    status, _ = await call("DELETE", f"/jobs/{job['id']}")
    assert status in (200, 204)
    status, gone = await call("DELETE", "/vcenters/lab2")
    assert status == 200 and gone == {"deleted": "lab2"} == Deleted(deleted="lab2").model_dump()
    status, problem = await call("GET", "/vcenters/lab2")
    assert status == 404 and "lab2" in problem["detail"]
    assert call.leaked(CANARY) == []


async def test_the_stored_password_is_encrypted(make_api: MakeApi, tmp_path: Path, canary_lab: Lab) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'enc.db'}")
    status, added = await api.call("POST", "/vcenters", json=stored(canary_lab))
    assert status == 201, added
    with api.ctx.sessions() as s:
        [row] = s.scalars(select(VCenterRow)).all()
        assert row.password and row.password.startswith("gAAAA") and CANARY not in row.password
    api.ctx.engine.dispose()
    check_files(tmp_path)


def check_files(tmp_path: Path) -> None:
    db_files = list(tmp_path.glob("enc.db*"))
    assert db_files and [p for p in db_files if CANARY.encode() in p.read_bytes()] == []
    assert files_holding(tmp_path / "data", CANARY) == []
    key = tmp_path / "data" / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_bad_bodies_name_the_field(make_api: MakeApi, tmp_path: Path, lab: Lab) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'bad.db'}")
    cases: list[tuple[Any, str]] = [
        ({k: v for k, v in stored(lab).items() if k != "password"}, "password:"),
        (stored(lab, url="ftp://x"), "url:"),
        (stored(lab, name="a b"), "name:"),
        (stored(lab, verify_tls="perhaps"), "verify_tls:"),
        (stored(lab, ca_pem="not a pem"), "ca_pem:"),
        (stored(lab, colour="blue"), "colour:"),
        ([1, 2], "(body):"),
    ]
    for body, field in cases:
        status, problem = await api.call("POST", "/vcenters", json=body)
        assert status == 422 and problem["detail"].startswith(field), (body, problem)
    status, problem = await api.call("PUT", "/vcenters/nope", json={"username": "u"})
    assert status == 404
    status, problem = await api.call("POST", "/vcenters/nope/test")
    assert status == 404
    status, _ = await api.call("POST", "/vcenters?skip_test=true", json=stored(lab))
    status, problem = await api.call("PUT", "/vcenters/lab2", json={"name": "other"})
    assert status == 422 and problem["detail"].startswith("name:")
    status, problem = await api.call("PUT", "/vcenters/lab2", json={"verify_tls": 3})
    assert status == 422 and problem["detail"].startswith("verify_tls:")
    status, problem = await api.call("GET", "/vcenters", headers={"X-API-Key": "wrong"})
    assert status == 401


async def probe_of(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    status, problem = await api.call("POST", "/vcenters", json=body)
    assert status == 422, problem
    with api.ctx.sessions() as s:
        assert s.scalars(select(VCenterRow)).all() == []  # nothing saved
    return dict(problem)


@pytest.fixture
async def not_vcenter() -> AsyncIterator[str]:
    """An HTTP server that is not a vCenter: 'hello' at /, 404 everywhere else."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/sdk"
    await runner.cleanup()


TLS_LEAF: dict[str, bytes] = {}  # the tls_server's certificate (DER), by URL


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[str, str]]:
    """An HTTPS server (not a vCenter) on 127.0.0.2 with a certificate of a CA nobody trusts:
    its URL and that CA's PEM. (On 127.0.0.1 pyVmomi, and vbm with it, does not check certificates.)"""
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf = ca.issue_cert("127.0.0.2")
    leaf.configure_cert(ctx)
    runner = web.AppRunner(web.Application())
    await runner.setup()
    port = free_port("127.0.0.2")
    await web.TCPSite(runner, "127.0.0.2", port, ssl_context=ctx).start()
    url = f"https://127.0.0.2:{port}/sdk"
    TLS_LEAF[url] = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    yield url, ca.cert_pem.bytes().decode()
    await runner.cleanup()


def expected_thumbprints(url: str) -> tuple[str, str]:
    """The certificate's thumbprints computed here, as vSphere shows them (AA:BB:..., upper case)."""
    der = TLS_LEAF[url]
    sha256, sha1 = hashlib.sha256(der).digest(), hashlib.sha1(der).digest()
    return ":".join(f"{b:02X}" for b in sha256), ":".join(f"{b:02X}" for b in sha1)


async def test_what_a_failed_connection_test_says(
    make_api: MakeApi, tmp_path: Path, lab: Lab, not_vcenter: str, tls_server: tuple[str, str]
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'probe.db'}")
    dns = await probe_of(api, stored(lab, url="https://no-such-host.invalid/sdk"))
    assert dns["test"]["kind"] == "dns" and dns["detail"].startswith("url: connection test failed (dns)")
    assert "no-such-host.invalid" in dns["detail"]
    tcp = await probe_of(api, stored(lab, url=f"http://127.0.0.1:{free_port()}/sdk"))
    assert tcp["test"]["kind"] == "tcp" and "refused" in tcp["detail"]
    creds = await probe_of(api, stored(lab, password="not-the-password"))
    assert creds["test"]["kind"] == "credentials" and creds["test"]["field"] == "password"
    assert "not-the-password" not in str(creds)
    other = await probe_of(api, stored(lab, url=not_vcenter))
    assert other["test"]["kind"] == "not_vcenter" and "vSphere" in other["detail"]
    url, ca_pem = tls_server
    tls = await probe_of(api, stored(lab, url=url))
    assert tls["test"]["kind"] == "tls" and tls["test"]["field"] == "ca_pem"
    assert "not trusted" in tls["detail"] and "verify_tls=false" in tls["detail"]
    sha256, sha1 = expected_thumbprints(url)
    assert len(sha256) == 95 and len(sha1) == 59  # 32 and 20 bytes as AA:BB:...
    # not trusted: the thumbprint is in the answer and the message, to compare with the vCenter's
    assert tls["test"]["thumbprint_sha256"] == sha256 and tls["test"]["thumbprint_sha1"] == sha1
    assert f"SHA-256 thumbprint {sha256} (SHA-1 {sha1})" in tls["detail"]
    trusted = await probe_of(api, stored(lab, url=url, ca_pem=ca_pem))  # TLS passes, then: not vSphere
    assert trusted["test"]["kind"] == "not_vcenter", trusted
    assert trusted["test"]["thumbprint_sha256"] == sha256  # the handshake's certificate
    unchecked = await probe_of(api, stored(lab, url=url, verify_tls=False))
    assert unchecked["test"]["kind"] == "not_vcenter", unchecked
    assert unchecked["test"]["thumbprint_sha1"] == sha1 and "thumbprint" not in unchecked["detail"]
    assert other["test"]["thumbprint_sha256"] is None  # http: no certificate
    status, saved = await api.call("POST", "/vcenters?skip_test=true", json=stored(lab, url=not_vcenter))
    assert status == 201 and saved["test"]["kind"] == "skipped"


async def test_the_certificates_thumbprint_in_the_test_route_and_vbm_vcenter_test(
    make_api: MakeApi, tmp_path: Path, lab: Lab, tls_server: tuple[str, str]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'thumb.db'}"
    api = await make_api(db_url)
    url, _ = tls_server
    sha256, sha1 = expected_thumbprints(url)
    status, _ = await api.call("POST", "/vcenters?skip_test=true", json=stored(lab, name="tls", url=url))
    assert status == 201
    status, tested = await api.call("POST", "/vcenters/tls/test")
    assert status == 200 and VCenterTested.model_validate(tested).thumbprint_sha256 == sha256, tested
    assert tested["ok"] is False and tested["thumbprint_sha1"] == sha1

    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update({"VBM_DATA_DIR": str(api.ctx.settings.data_dir), "VBM_DATABASE_URL": db_url})
    cli = [sys.executable, "-m", "shared.cli", "vcenter", "test", "tls"]
    done = await asyncio.to_thread(subprocess.run, cli, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "connection test failed (tls)" in done.stdout, done
    assert f"certificate SHA-256 thumbprint: {sha256}" in done.stdout
    assert f"certificate SHA-1 thumbprint:   {sha1}" in done.stdout


async def test_a_lost_key_names_the_vcenter(make_api: MakeApi, tmp_path: Path, canary_lab: Lab) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'lost.db'}")
    status, _ = await api.call("POST", "/vcenters", json=stored(canary_lab))
    assert status == 201
    await asyncio.to_thread(
        (tmp_path / "data" / "secret.key").unlink
    )  # lost: a new key is made, which cannot read it
    status, listed = await api.call("GET", "/vcenters")
    assert status == 200
    [row] = listed["vcenters"]
    assert VCenterList.model_validate(listed).vcenters[0].error == row["error"]
    assert "the password of vCenter 'lab2' cannot be decrypted" in row["error"]
    assert "secret.key" in row["error"] and "VBM_SECRET_KEY" in row["error"]
    status, problem = await api.call("POST", "/vcenters/lab2/test")
    assert status == 503 and "'lab2' cannot be decrypted" in problem["detail"]
    status, problem = await api.call("PUT", "/vcenters/lab2", json={"username": canary_lab.username})
    assert status == 503 and "'lab2'" in problem["detail"]
    api.ctx.engine.dispose()
    status, vms = await api.call("GET", "/vms")
    assert status == 200 and vms["unreachable"][0]["vcenter"] == "lab2"
    assert "cannot be decrypted" in vms["unreachable"][0]["error"]
    status, problem = await api.call("GET", "/vms?vcenter=lab2")
    assert status == 503 and "'lab2'" in problem["detail"]
    status, fixed = await api.call("PUT", "/vcenters/lab2", json={"password": CANARY})  # set again
    assert status == 200 and fixed["test"]["ok"] is True and "error" not in fixed
