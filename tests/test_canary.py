"""The canary test: every kind of secret vbm stores is configured through the API with a unique
canary string (the lab's vCenter password, S3 keys, an Azure account key, an SFTP password, an
rclone config, the SMTP password, a webhook URL's token, an HMAC key, a Telegram bot token, a CIFS
share's password, an API key); then a backup
runs through the real services (vCenter and S3 from the stored objects, the run told over the
stored webhook, email and Telegram), a login fails with a canary
key, a notification fails (its receiver down), the CIFS share's connection test and mount fail
(nothing listens; this kernel has no CIFS) and a backup fails writing to S3 (a bucket that does
not exist). Afterwards the database
file, the NATS store directory, the services' logs, this process's log records, the messages
sent and every API answer are searched: no canary anywhere.

Not here (not in this branch): a local user's password (users and sessions come with the
gateway's new auth)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from shared.db.models import Alert, Notification
from tests.gateway.conftest import MakeApi, make_api  # noqa: F401 - the fixture
from tests.gateway.test_vcenters import Answers
from tests.pipeline.conftest import Pipeline, default_spec, pipeline_factory  # noqa: F401 - the fixture
from tests.plugins.s3 import S3Server
from tests.plugins.smtp import SmtpServer
from tests.plugins.telegram import BotApi
from tests.plugins.webhook import WebhookReceiver

VC_PASSWORD = "Cnry-vc-4b1d"
AZURE_KEY = "Cnry-azure-77c0"
SFTP_PASSWORD = "Cnry-sftp-2e9f"
RCLONE_PASS = "Cnry-rclone-a5d3"
HOOK_TOKEN = "Cnry-hook-90e1"
HMAC_KEY = "Cnry-hmac-3c7b"
BAD_LOGIN = "Cnry-login-f00d"
SMTP_PASSWORD = "Smtp-pw-7c1e"  # what smtp_login_server accepts
BOT_TOKEN = "987654321:Cnry-bot-6d2a"
CIFS_PASSWORD = "Cnry-cifs-81f4"


def files_of(root: Path) -> dict[Path, bytes]:
    """Every file vbm wrote under the test's directory (not the lab's own, which holds its password)."""
    return {
        f: f.read_bytes()
        for f in root.rglob("*")
        if f.is_file() and not f.relative_to(root).parts[0].startswith("lab")
    }


async def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        await asyncio.sleep(0.3)


async def test_no_secret_anywhere(
    pipeline_factory: Callable[..., Pipeline],  # noqa: F811
    make_api: MakeApi,  # noqa: F811
    s3_server: S3Server,
    s3_bucket: str,
    webhook_receiver: WebhookReceiver,
    smtp_login_server: SmtpServer,
    bot_api: BotApi,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    spec = dataclasses.replace(default_spec(), password=VC_PASSWORD)
    p = pipeline_factory(spec, VBM_VCENTERS="[]", VBM_NOTIFICATIONS__RETRY="[0.5]")
    api = await make_api(f"sqlite:///{p.data / 'vbm.db'}")  # the gateway, on the same data directory
    assert api.ctx.settings.data_dir == p.data
    call = Answers(api)
    bot_api.token = BOT_TOKEN
    canaries = [VC_PASSWORD, AZURE_KEY, SFTP_PASSWORD, RCLONE_PASS, HOOK_TOKEN, HMAC_KEY, BAD_LOGIN]
    canaries += [SMTP_PASSWORD, s3_server.secret_key, api.key, BOT_TOKEN, CIFS_PASSWORD]

    vc = {"name": "lab", "url": p.lab.sdk_url, "username": p.lab.username, "password": VC_PASSWORD}
    status, body = await call("POST", "/vcenters", json={**vc, "verify_tls": False})
    assert status == 201, body
    url = f"s3://{s3_server.endpoint}/{s3_bucket}/vbm?tls=false"
    keys = {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    gone = f"s3://{s3_server.endpoint}/no-such-bucket-{uuid.uuid4().hex[:8]}/vbm?tls=false"
    for location, skip in [
        ({"name": "s3", "url": url, **keys}, False),
        ({"name": "gone", "url": gone, **keys}, True),
        ({"name": "az", "url": "azure://acct/c", "account_key": AZURE_KEY}, True),
        ({"name": "ftp", "url": "sftp://vbm@127.0.0.1:9/r", "password": SFTP_PASSWORD}, True),
        (
            {
                "name": "rc",
                "url": "rclone://dav/r",
                "config": f"[dav]\ntype = webdav\npass = {RCLONE_PASS}\n",
            },
            True,
        ),
    ]:
        path = "/locations?skip_test=true" if skip else "/locations"
        status, body = await call("POST", path, json=location)
        assert status == 201, body
    smtp = {"host": smtp_login_server.host, "port": smtp_login_server.port, "security": "none"}
    status, body = await call(
        "PUT", "/smtp", json={**smtp, "username": "vbm-mailer", "password": SMTP_PASSWORD}
    )
    assert status == 200, body
    outcomes = ["success", "warning", "failure"]
    hook = {
        "name": "hook",
        "type": "webhook",
        "url": webhook_receiver.url(f"/in/{HOOK_TOKEN}"),
        "secret": HMAC_KEY,
    }
    for channel in [
        {**hook, "on": outcomes},
        {"name": "mail", "type": "email", "to": ["ops@example.com"], "on": outcomes},
        {
            "name": "tg",
            "type": "telegram",
            "token": BOT_TOKEN,
            "chat_id": "4242",
            "api_url": bot_api.api_url,
            "on": outcomes,
        },
    ]:
        status, body = await call("POST", "/channels", json=channel)
        assert status == 201, body

    share = {"name": "share", "kind": "cifs", "server": "127.0.0.1", "share": "backup", "username": "vbm",
             "password": CIFS_PASSWORD}  # fmt: skip
    status, body = await call("POST", "/mounts?skip_mount=true", json=share)
    assert status == 201, body
    for action in ("test", "mount"):
        status, body = await call("POST", f"/mounts/share/{action}")
        assert status == 200 and body["ok"] is False, (action, body)

    # a backup through the stored vCenter and S3 location, told over the stored channels
    status, job = await call(
        "POST",
        "/jobs",
        json={"name": "canary", "vcenter": "lab", "vms": [{"name": "web"}], "repository": url},
    )
    assert status == 201, job
    p.start("snapshotter", "mover", "verifier", "notifier")
    run_id = await p.run_job(job["id"])
    assert (await p.wait_run(run_id, timeout=120)).state == "succeeded", p.dump(run_id)
    assert list(s3_server.client().list_objects(s3_bucket, "vbm/chunks/", recursive=True))
    await wait_for("webhook delivery", lambda: bool(webhook_receiver.received))
    smtp_login_server.wait_for(1, timeout=30)
    # the stored secrets were used: the token's URL, the HMAC key, the SMTP login
    assert webhook_receiver.received[0].path == f"/in/{HOOK_TOKEN}"
    assert "X-VBM-Signature" in webhook_receiver.received[0].headers
    assert smtp_login_server.logins[0] == ("vbm-mailer", True)

    # a failed login with a canary key
    status, body = await call("GET", "/jobs", headers={"X-API-Key": BAD_LOGIN})
    assert status == 401, body

    # a failing notification (the receiver down) and a failing S3 write (no such bucket)
    webhook_receiver.stop()
    status, body = await call("POST", "/notifications/test", json={"channel": "hook"})
    assert status == 200 and body["ok"] is False, body
    status, bad = await call(
        "POST", "/jobs", json={"name": "gone", "vcenter": "lab", "vms": [{"name": "db"}], "repository": gone}
    )
    assert status == 201, bad
    run_id = await p.run_job(bad["id"])
    assert (await p.wait_run(run_id, timeout=120)).state == "failed", p.dump(run_id)

    def hook_failed() -> bool:
        with p.sessions() as s:
            return any(
                n.state == "failed"
                for n in s.scalars(select(Notification).where(Notification.channel == "hook"))
            )

    await wait_for("a failed delivery to the stopped receiver", hook_failed)
    assert bot_api.posted, "nothing reached the Bot API"
    await wait_for(
        "the notification_failed alert", lambda: any(a.kind == "notification_failed" for a in p.alerts())
    )
    for path in (
        "/runs",
        f"/runs/{run_id}",
        "/alerts?all=true",
        "/notifications",
        "/locations",
        "/channels",
        "/smtp",
        "/vcenters",
        "/mounts",
        "/mounts/share",
    ):
        status, _ = await call("GET", path)
        assert status == 200, path
    p.stop()

    # the search: files (database, NATS store, service logs, key file), records, messages, answers
    files = files_of(tmp_path)
    assert any(f.name == "vbm.db" for f in files) and any("nats" in f.parts for f in files)
    assert any(f.suffix == ".log" for f in files)
    sent = [m.as_string() for m in smtp_login_server.messages] + [
        r.body.decode() for r in webhook_receiver.received
    ]
    with p.sessions() as s:
        rows = [f"{a.message}" for a in s.scalars(select(Alert))] + [
            f"{n.error}" for n in s.scalars(select(Notification))
        ]
    # every record of this process (the gateway's among them), but the receiving servers' own
    # (the test SMTP server's, the webhook receiver's access log of the requests vbm made to it)
    records = [
        r.getMessage()
        for r in caplog.records
        if r.name != "mail.log" and not (r.name == "aiohttp.access" and '"vbm-notifier"' in r.getMessage())
    ]
    hits = []
    for canary in canaries:
        hits += [f"{f}: {canary}" for f, data in files.items() if canary.encode() in data]
        hits += [f"answer {b}" for b in call.leaked(canary)]
        hits += [f"message {m[:80]}" for m in sent if canary in m]
        hits += [f"row {r[:80]}" for r in rows + records if canary in r]
    assert hits == []
