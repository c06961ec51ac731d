"""/api/v1/locations, /api/v1/smtp, /api/v1/channels on real servers (SeaweedFS S3, an SMTP
server that requires a login, a webhook receiver, the lab): stored credentials are used where
repositories are opened and notifications sent; they never leave (answers say "set") and are
never in the database in plain text; the configuration wins and is read only; rotation and a lost
key."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from lab.launcher import Lab
from services.gateway import api_settings
from services.gateway.access import declared
from services.gateway.answers.settings import (
    ChannelAnswer,
    ChannelList,
    LocationAnswer,
    LocationList,
    LocationSaved,
    SmtpAnswer,
)
from shared.catalog import locations as locstore
from shared.catalog import secrets as vault_secrets
from shared.clock import utcnow
from shared.model.access import Permission, Role, allows
from shared.repo.errors import Misconfigured
from shared.repo.locations import opened
from tests.gateway.conftest import Api, MakeApi, lab_vcenter
from tests.gateway.test_vcenters import Answers, files_holding
from tests.plugins.s3 import S3Server
from tests.plugins.smtp import SmtpServer
from tests.plugins.webhook import WebhookReceiver
from tests.test_cli_jobs import ROOT

TOKEN = "Hook-token-3f9a2c71d0"
HMAC_KEY = "Hmac-key-b84e1d95aa"
SMTP_USER, SMTP_PASSWORD = "vbm-mailer", "Smtp-pw-7c1e"


def db_file(db_url: str) -> Path | None:
    url = make_url(db_url)
    return Path(str(url.database)) if url.get_backend_name() == "sqlite" else None


def assert_nowhere(api: Api, db_url: str, tmp_path: Path, *secrets: str) -> None:
    """No secret in the database file (its bytes, journal included) nor the data directory."""
    path = db_file(db_url)
    if path is not None:
        files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
        assert files and [(p, s) for p in files for s in secrets if s.encode() in p.read_bytes()] == []
    for secret in secrets:
        assert files_holding(tmp_path / "data", secret) == []


def vbm(api: Api, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update({"VBM_DATA_DIR": str(api.ctx.settings.data_dir), "VBM_DATABASE_URL": db_url})
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_an_s3_location_with_its_keys_is_stored_encrypted_and_used(
    make_api: MakeApi, db_url: str, s3_server: S3Server, s3_bucket: str, lab: Lab, tmp_path: Path
) -> None:
    api = await make_api(db_url, (lab_vcenter(lab),))
    call = Answers(api)
    url = f"s3://{s3_server.endpoint}/{s3_bucket}/vbm?tls=false"
    keys = {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key}

    # bad input: 422 naming the field, 409 for the configured one; nothing saved
    status, problem = await call(
        "POST", "/locations", json={"name": "b", "url": url, **keys, "secret_key": "no"}
    )
    assert status == 422 and problem["detail"].startswith("url: ") and problem["test"]["ok"] is False
    assert "nothing was saved" in problem["detail"]
    for body, field in [
        ({"name": "b", "url": url, "access_key": "a"}, "secret_key"),
        ({"name": "b", "url": url, **keys, "account_key": "x"}, "account_key"),
        ({"name": "b", "url": "ftp://x/y"}, "url"),
        ({"name": "b c", "url": url, **keys}, "name"),
        ({"name": "b", "url": url, **keys, "secret_key": 5}, "secret_key"),
        ({"name": "r", "url": "rclone://remote/p", "config": "[other]\ntype = local\n"}, "config"),
        ({"name": "s", "url": "sftp://u@h/p", "private_key": "not a key"}, "private_key"),
        ([1], "(body)"),
    ]:
        status, problem = await call("POST", "/locations", json=body)
        assert status == 422 and problem["detail"].startswith(f"{field}: "), (body, problem)
    status, problem = await call("POST", "/locations", json={"name": "default", "url": url, **keys})
    assert status == 409 and "configured repository" in problem["detail"]
    assert (await call("GET", "/locations/b"))[0] == 404

    status, added = await call("POST", "/locations", json={"name": "b", "url": url, **keys})
    assert status == 201, added
    assert added["secret_key"] == "set" and added["access_key"] == s3_server.access_key
    assert added["source"] == "api" and added["kind"] == "s3" and added["test"]["ok"] is True
    LocationSaved.model_validate(added)  # the answer models of the OpenAPI document hold
    assert (await call("POST", "/locations", json={"name": "b", "url": url, **keys}))[0] == 409
    status, taken = await call("POST", "/locations", json={"name": "c", "url": url, **keys})
    assert status == 409 and taken["detail"].startswith("url: ")
    status, listed = await call("GET", "/locations")
    LocationList.model_validate(listed)
    assert status == 200 and [(v["name"], v["source"]) for v in listed["locations"]] == [
        ("default", "env"),
        ("b", "api"),
    ]

    # a real write through the stored credentials: `vbm repo init`, then the services' lookup
    out = vbm(api, db_url, "repo", "init", "--repo", url)
    assert out.returncode == 0, out
    assert [o.object_name for o in s3_server.client().list_objects(s3_bucket, "vbm/", recursive=True)]
    found = locstore.lookup(api.ctx.settings, api.ctx.sessions)
    async with opened(f"{url.split('?')[0]}?tls=false", found(url)) as repo:
        assert repo.config.chunk_size > 0
    status, problem = await call("PUT", "/locations/b", json={"secret_key": "wrong"})
    assert status == 422 and "cannot be opened" in problem["detail"]
    status, changed = await call("PUT", "/locations/b", json={"url": url})  # the keys are kept
    assert status == 200 and LocationSaved.model_validate(changed).test.ok and changed["secret_key"] == "set"

    # rotation re-encrypts it, and it still opens
    rotated = vault_secrets.rotate(api.ctx.engine, api.ctx.settings, utcnow())
    assert rotated.values == 1
    async with opened(url, found(url)) as repo:
        assert repo.config.chunk_size > 0

    # a job uses it and names a stored channel: deleting either is refused naming the job
    hook = {"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook"}
    assert (await call("POST", "/channels", json=hook))[0] == 201
    job = {
        "name": "to-s3",
        "vcenter": "lab",
        "vms": [{"name": "vm1"}],
        "repository": f"{url.split('?')[0]}/x",
        "options": {"notify": {"channels": ["nope"]}},
    }
    status, problem = await call("POST", "/jobs", json=job)
    assert status == 422 and "no notification channel named 'nope' (channels: ops)" in problem["detail"]
    status, made = await call("POST", "/jobs", json={**job, "options": {"notify": {"channels": ["ops"]}}})
    assert status == 201, made
    status, problem = await call("DELETE", "/locations/b")
    assert status == 409 and "to-s3" in problem["detail"]
    status, problem = await call("DELETE", "/channels/ops")
    assert status == 409 and "to-s3" in problem["detail"]
    assert (await call("DELETE", f"/jobs/{made['id']}"))[0] in (200, 204)
    assert (await call("DELETE", "/locations/b"))[0] == 200
    out = vbm(api, db_url, "repo", "info", "--repo", url)  # without it: no credentials
    assert out.returncode == 1 and "no S3 credentials are configured" in out.stderr, out

    assert call.leaked(s3_server.secret_key) == []
    assert_nowhere(api, db_url, tmp_path, s3_server.secret_key)


async def test_a_stored_webhook_and_smtp_login_send_and_never_show_their_secrets(
    make_api: MakeApi,
    db_url: str,
    webhook_receiver: WebhookReceiver,
    smtp_login_server: SmtpServer,
    tmp_path: Path,
) -> None:
    api = await make_api(db_url)
    call = Answers(api)
    hook = {
        "name": "hook",
        "type": "webhook",
        "url": webhook_receiver.url(f"/hooks/{TOKEN}"),
        "secret": HMAC_KEY,
    }
    for body, field in [
        ({"name": "x", "type": "pager"}, "type"),
        ({"name": "x", "type": "webhook"}, "url"),
        ({"name": "x", "type": "email", "to": ["not-an-address"]}, "to"),
        ({"name": "x", "type": "webhook", "url": "http://h/", "on": ["sometimes"]}, "on.0"),
    ]:
        status, problem = await call("POST", "/channels", json=body)
        assert status == 422 and problem["detail"].startswith(f"{field}: "), (body, problem)
    status, added = await call("POST", "/channels", json=hook)
    assert status == 201, added
    assert added["url"] == "set" and added["secret"] == "set" and ChannelAnswer.model_validate(added).signed
    assert added["endpoint"] == f"127.0.0.1:{webhook_receiver.port}" and added["source"] == "api"
    assert (await call("POST", "/channels", json=hook))[0] == 409

    status, result = await call("POST", "/notifications/test", json={"channel": "hook"})
    assert status == 200 and result["ok"] is True, result
    [got] = webhook_receiver.wait_for(1)
    assert got.path == f"/hooks/{TOKEN}"
    assert (
        got.headers["X-VBM-Signature"]
        == "sha256=" + hmac.new(HMAC_KEY.encode(), got.body, hashlib.sha256).hexdigest()
    )

    # the SMTP login, stored; an email channel sends through it
    assert (await call("GET", "/smtp"))[0] == 404
    status, problem = await call("PUT", "/smtp", json={"port": 25})
    assert status == 422 and problem["detail"].startswith("host: ")
    status, problem = await call("PUT", "/smtp", json={"host": "h", "security": "ssl"})
    assert status == 422 and problem["detail"].startswith("security: ")
    smtp = {
        "host": smtp_login_server.host,
        "port": smtp_login_server.port,
        "security": "none",
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "sender": "vbm@example.com",
    }
    status, stored = await call("PUT", "/smtp", json=smtp)
    assert status == 200 and stored["password"] == "set" and stored["source"] == "api", stored
    SmtpAnswer.model_validate(stored)
    mail = {"name": "mail", "type": "email", "to": ["ops@example.com"], "on": ["failure"]}
    assert (await call("POST", "/channels", json=mail))[0] == 201
    status, result = await call("POST", "/notifications/test", json={"channel": "mail"})
    assert status == 200 and result["ok"] is True, result
    [message] = smtp_login_server.wait_for(1)
    assert message["To"] == "ops@example.com" and smtp_login_server.logins == [(SMTP_USER, True)]
    status, changed = await call("PUT", "/smtp", json={"password": "Wrong-pw-11"})
    assert status == 200 and changed["password"] == "set"
    status, result = await call("POST", "/notifications/test", json={"channel": "mail"})
    assert status == 200 and result["ok"] is False and "refused the login" in result["results"][0]["error"]
    assert "Wrong-pw-11" not in json.dumps(result)

    status, listed = await call("GET", "/channels")
    assert status == 200 and [c.name for c in ChannelList.model_validate(listed).channels] == ["hook", "mail"]
    status, notifications = await call("GET", "/notifications")
    assert status == 200 and {c["name"] for c in notifications["channels"]} == {"hook", "mail"}
    status, changed = await call("PUT", "/channels/hook", json={"on": ["failure", "success"]})
    assert status == 200 and changed["on"] == ["failure", "success"] and changed["secret"] == "set"
    status, problem = await call("PUT", "/channels/hook", json={"name": "other"})
    assert status == 422 and problem["detail"].startswith("name: ")

    rotated = vault_secrets.rotate(api.ctx.engine, api.ctx.settings, utcnow())
    assert rotated.values == 3  # the URL and key of hook, the SMTP password
    webhook_receiver_count = len(webhook_receiver.received)
    status, result = await call("POST", "/notifications/test", json={"channel": "hook"})
    assert status == 200 and result["ok"] is True
    webhook_receiver.wait_for(webhook_receiver_count + 1)

    assert (await call("DELETE", "/channels/mail"))[0] == 200
    assert (await call("DELETE", "/smtp"))[0] == 200
    assert (await call("GET", "/channels/mail"))[0] == 404
    for secret in (TOKEN, HMAC_KEY, SMTP_PASSWORD, "Wrong-pw-11"):
        assert call.leaked(secret) == []
    assert_nowhere(api, db_url, tmp_path, TOKEN, HMAC_KEY, SMTP_PASSWORD, "Wrong-pw-11")


async def test_the_configuration_wins_and_is_read_only(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(
        db_url,
        repository="s3://127.0.0.1:9/configured?tls=false",
        s3={"access_key": "Env-ak", "secret_key": "Env-sk-0d1c"},
        notifications={
            "channels": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/Env-token"}],
            "smtp": {"host": "mail.example", "password": "Env-smtp-pw"},
        },
    )
    call = Answers(api)
    status, default = await call("GET", "/locations/default")
    assert status == 200 and LocationAnswer.model_validate(default).source == "env"
    assert default["secret_key"] == "set"
    assert default["access_key"] == "Env-ak" and default["url"] == "s3://127.0.0.1:9/configured?tls=false"
    for method, path in [("PUT", "/locations/default"), ("DELETE", "/locations/default")]:
        status, problem = await call(method, path, json={})
        assert status == 409 and "configuration takes precedence" in problem["detail"], (path, problem)
    status, channels = await call("GET", "/channels")
    assert [(c["name"], c["source"], c["url"]) for c in channels["channels"]] == [("ops", "env", "set")]
    ChannelList.model_validate(channels)
    for method, path, body in [
        ("POST", "/channels", {"name": "ops", "type": "webhook", "url": "http://h/"}),
        ("PUT", "/channels/ops", {"on": ["success"]}),
        ("DELETE", "/channels/ops", None),
        ("PUT", "/smtp", {"host": "other"}),
        ("DELETE", "/smtp", None),
    ]:
        status, problem = await call(method, path, json=body)
        assert status == 409 and "configuration takes precedence" in problem["detail"], (path, problem)
    status, smtp = await call("GET", "/smtp")
    assert status == 200 and SmtpAnswer.model_validate(smtp).source == "env" and smtp["password"] == "set"

    # a stored location at the configured repository: the settings' keys are used
    body = {
        "name": "same",
        "url": "s3://127.0.0.1:9/configured?tls=false",
        "access_key": "Api-ak",
        "secret_key": "Api-sk",
    }
    status, added = await call("POST", "/locations?skip_test=true", json=body)
    assert status == 201 and LocationSaved.model_validate(added).test.ok is None
    found = locstore.lookup(api.ctx.settings, api.ctx.sessions)
    assert found("s3://127.0.0.1:9/configured/sub?tls=false").s3_access_key == "Env-ak"
    body = {
        "name": "other",
        "url": "s3://127.0.0.1:9/other",
        "access_key": "Api-ak2",
        "secret_key": "Api-sk2",
    }
    assert (await call("POST", "/locations?skip_test=true", json=body))[0] == 201
    assert found("s3://127.0.0.1:9/other/deeper").s3_access_key == "Api-ak2"
    assert found("s3://127.0.0.1:9/elsewhere").s3_access_key == "Env-ak"  # the settings: the fallback
    for secret in ("Env-sk-0d1c", "Env-token", "Env-smtp-pw", "Api-sk", "Api-sk2"):
        assert call.leaked(secret) == []


async def test_a_lost_key_fails_that_location_alone(make_api: MakeApi, db_url: str, tmp_path: Path) -> None:
    api = await make_api(db_url)
    body = {"name": "far", "url": "s3://127.0.0.1:9/far", "access_key": "ak", "secret_key": "Lost-sk-9"}
    assert (await api.call("POST", "/locations?skip_test=true", json=body))[0] == 201
    hook = {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/Lost-token"}
    assert (await api.call("POST", "/channels", json=hook))[0] == 201
    (tmp_path / "data" / "secret.key").unlink()  # lost: the next use makes a new key
    status, listed = await api.call("GET", "/locations")
    assert status == 200
    [far] = [v for v in listed["locations"] if v["name"] == "far"]
    LocationList.model_validate(listed)
    assert "the credentials of repository location 'far' cannot be decrypted" in far["error"]
    found = locstore.lookup(api.ctx.settings, api.ctx.sessions)
    try:
        found("s3://127.0.0.1:9/far/x")
        raise AssertionError("opened with credentials it cannot decrypt")
    except Misconfigured as exc:
        assert "'far' cannot be decrypted" in str(exc)
    assert found("/srv/elsewhere").s3_access_key == ""  # every other location as before
    status, channels = await api.call("GET", "/channels")
    assert status == 200 and "cannot be decrypted" in channels["channels"][0]["error"]
    ChannelList.model_validate(channels)
    status, problem = await api.call("POST", "/notifications/test", json={"channel": "hook"})
    assert status == 503 and "notification channel 'hook' cannot be decrypted" in problem["detail"]
    assert (await api.call("GET", "/notifications"))[0] == 200


def test_readers_may_read_and_only_admins_change() -> None:
    """Each route declares its permission; a viewer holds the reads, only an admin the changes."""
    for route in api_settings.routes:
        assert isinstance(route, type(next(iter(api_settings.routes))))
        permission = declared(route.handler)  # type: ignore[attr-defined]
        assert isinstance(permission, Permission), route
        if route.method == "GET":  # type: ignore[attr-defined]
            assert permission in (Permission.REPOSITORIES_READ, Permission.NOTIFICATIONS_READ)
            assert allows(Role.VIEWER, permission)
        else:
            assert permission == Permission.SETTINGS_WRITE
            assert not allows(Role.OPERATOR, permission) and allows(Role.ADMIN, permission)
