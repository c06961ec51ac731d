"""Secrets are write-only: every kind of secret vbm takes is set to a unique canary string, then a
backup, a failed login, failing notifications, a failing S3 write and a vCenter refusing a stored
password run; the database file, the NATS store, every log line and every API answer hold 0
canaries (while positive controls show the search finds what is there)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.gateway import conftest as gateway
from tests.gateway.conftest import MakeApi, lab_vcenter
from tests.pipeline.conftest import Pipeline
from tests.plugins.procs import free_port
from tests.plugins.s3 import S3Server

make_api = gateway.make_api  # the gateway in this process, on the pipeline's database

pytestmark = pytest.mark.timeout(240)


def _canary(kind: str) -> str:
    return f"CANARY{kind.upper()}{secrets.token_hex(6)}"


async def test_no_secret_leaks_anywhere(
    pipeline_factory: Callable[..., Pipeline],
    make_api: MakeApi,
    s3_server: S3Server,
    s3_bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    closed = free_port()  # nothing listens: SMTP and the webhook fail against it
    c = {
        k: _canary(k)
        for k in (
            "vcpw",
            "s3access",
            "s3secret",
            "azure",
            "sftppw",
            "smtppw",
            "hook",
            "hmac",
            "userpw",
            "badpw",
        )
    }
    fernet = Fernet.generate_key().decode()
    channels = [
        {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{closed}/hook/{c['hook']}",
         "secret": c["hmac"], "on": ["success", "warning", "failure"]},
        {"name": "mail", "type": "email", "to": ["ops@example.com"], "on": ["failure"]},
    ]  # fmt: skip
    notifications = {
        "smtp": {"host": "127.0.0.1", "port": closed, "security": "none", "username": "vbm",
                 "password": c["smtppw"]},
        "channels": channels, "retry": [0.5], "timeout": 2,
    }  # fmt: skip
    p = pipeline_factory(
        VBM_SECRET_KEY=fernet,
        VBM_S3__ACCESS_KEY=c["s3access"],
        VBM_S3__SECRET_KEY=c["s3secret"],
        VBM_AZURE__ACCOUNT_KEY=c["azure"],
        VBM_SFTP__PASSWORD=c["sftppw"],
        VBM_NOTIFICATIONS=json.dumps(notifications),
    )
    p.start()
    api = await make_api(
        f"sqlite:///{p.data / 'vbm.db'}",
        vcenters=(lab_vcenter(p.lab),),
        secret_key=fernet,
        s3={"access_key": c["s3access"], "secret_key": c["s3secret"]},
        azure={"account_key": c["azure"]},
        sftp={"password": c["sftppw"]},
        notifications=notifications,
        repository=str(p.repo_dir),
    )
    answers: list[str] = []

    async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {**api.auth, **kw.pop("headers", {})}
        async with api.client.request(method, f"/api/v1{path}", headers=headers, **kw) as resp:
            text = await resp.text()
            answers.append(f"{resp.status} {dict(resp.headers)} {text}")
            return resp.status, json.loads(text) if text and resp.content_type.endswith("json") else None

    # people: a user with a canary password, a failed login with another, a good one
    assert (await call("POST", "/users", json={"name": "ops", "role": "operator", "password": c["userpw"]}))[
        0
    ] == 201
    assert (await call("POST", "/session", json={"name": "ops", "password": c["badpw"]}, headers={}))[
        0
    ] == 401
    assert (await call("POST", "/session", json={"name": "ops", "password": c["userpw"]}, headers={}))[
        0
    ] == 201
    # a vCenter whose stored password is refused: the test says so, then it is saved anyway
    vc = {"name": "vc-canary", "url": p.lab.sdk_url, "username": p.lab.username, "password": c["vcpw"],
          "verify_tls": False}  # fmt: skip
    assert (await call("POST", "/vcenters", json=vc))[0] == 422
    assert (await call("POST", "/vcenters?skip_test=true", json=vc))[0] == 201
    assert (await call("POST", "/vcenters/vc-canary/test"))[0] in (200, 422)
    status, vms = await call("GET", "/vms")
    assert status == 200 and [u["vcenter"] for u in vms["unreachable"]] == ["vc-canary"]
    for path in ("/vcenters", "/vcenters/vc-canary", "/notifications", "/users", "/keys", "/services"):
        assert (await call("GET", path))[0] == 200, path

    # a backup that works, and one whose S3 repository refuses the (canary) keys
    good = p.create_job("canary-good", ["web"])
    bad = p.create_job(
        "canary-s3", ["db"], repository=f"s3://{s3_server.endpoint}/{s3_bucket}/canary?tls=false"
    )
    runs = [await p.run_job(good), await p.run_job(bad)]
    ended = [await p.wait_run(r, timeout=60) for r in runs]
    assert ended[0].state == "succeeded", p.dump(runs[0])
    assert ended[1].state == "failed", p.dump(runs[1])
    # notifications that fail: a test through the API, and the runs' own
    assert (await call("POST", "/notifications/test", json={}))[0] in (200, 502)
    for _ in range(100):
        status, body = await call("GET", "/notifications?limit=50")
        if sum(1 for d in body["deliveries"] if d["state"] == "failed") >= 2:
            break
        await asyncio.sleep(0.3)
    for path in (
        f"/runs/{runs[1]}",
        f"/runs/{runs[1]}/log",
        "/alerts?all=true",
        "/backups",
        "/audit?limit=500",
    ):
        assert (await call("GET", path))[0] == 200, path
    p.stop()
    api.ctx.engine.dispose()

    places = _places(p, caplog.text, answers)
    # positive controls: the search sees what is there
    assert "canary-good" in places["database"] and "canary-good" in places["NATS store"]
    assert "vc-canary" in places["API answers"] and "snapshot" in places["service logs"]
    leaks = {
        f"{kind} in {where}": text.count(value)
        for kind, value in {**c, "secret key": fernet, "API key": api.key.split("_", 2)[2]}.items()
        for where, text in places.items()
        if value in text
    }
    assert leaks == {}, leaks


def _places(p: Pipeline, test_log: str, answers: list[str]) -> dict[str, str]:
    def read(paths: list[Path]) -> str:
        return "\n".join(path.read_bytes().decode("latin-1") for path in paths if path.is_file())

    return {
        "database": read([p.data / "vbm.db", p.data / "vbm.db-wal"]),
        "NATS store": read(sorted(Path(p.nats.store_dir).rglob("*"))),
        "service logs": read(sorted(p.data.glob("*.log"))) + test_log,
        "API answers": "\n".join(answers),
    }
