"""`vbm location`, `vbm channel`, `vbm smtp` through real processes on a real database, SeaweedFS
S3, the webhook receiver and an SMTP server with a login: secrets given on stdin, never printed,
stored encrypted, used by `vbm repo` and `vbm notify test`, kept readable by `vbm secrets rotate`."""

from __future__ import annotations

import json
from pathlib import Path

from services.gateway.answers.settings import (
    ChannelAnswer,
    ChannelList,
    Deleted,
    LocationAnswer,
    LocationList,
    LocationSaved,
    SmtpAnswer,
)
from tests.plugins.s3 import S3Server
from tests.plugins.smtp import SmtpServer
from tests.plugins.webhook import WebhookReceiver
from tests.test_cli_jobs import env_for
from tests.test_cli_vcenter import vbm

TOKEN, HMAC_KEY = "Cli-hook-token-6d2e", "Cli-hmac-90ab"
SMTP_USER, SMTP_PASSWORD = "vbm-mailer", "Smtp-pw-7c1e"


def test_locations_channels_and_smtp_from_the_command_line(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    webhook_receiver: WebhookReceiver,
    smtp_login_server: SmtpServer,
) -> None:
    db = tmp_path / "cli.db"
    env = env_for(tmp_path, f"sqlite:///{db}")
    url = f"s3://{s3_server.endpoint}/{s3_bucket}/cli?tls=false"
    add = ["location", "add", "b", "--url", url, "--access-key", s3_server.access_key, "--secret-stdin"]
    out = vbm(env, *add, stdin="wrong-secret\n")
    assert out.returncode == 1 and "cannot be opened" in out.stderr and "nothing was saved" in out.stderr
    out = vbm(env, *add, stdin=s3_server.secret_key + "\n")
    assert out.returncode == 0 and "location b added" in out.stdout, out
    out = vbm(env, "location", "list", "--json")
    assert out.returncode == 0, out
    views = json.loads(out.stdout)["locations"]
    LocationList.model_validate_json(out.stdout)  # --json prints what the API answers
    assert [(v["name"], v["source"], v.get("secret_key")) for v in views] == [
        ("default", "env", None),
        ("b", "api", "set"),
    ]
    out = vbm(env, "repo", "init", "--repo", url)  # the stored keys open it
    assert out.returncode == 0, out
    out = vbm(env, "location", "edit", "b", "--access-key", s3_server.access_key, "--json")
    assert LocationSaved.model_validate_json(out.stdout).test.ok, out  # the stored secret kept
    assert (
        LocationAnswer.model_validate_json(vbm(env, "location", "show", "b", "--json").stdout).secret_key
        == "set"
    )

    out = vbm(env, "channel", "add", "hook", "--type", "webhook", "--secrets-stdin",
              stdin=f"{webhook_receiver.url(f'/h/{TOKEN}')}\n{HMAC_KEY}\n")  # fmt: skip
    assert out.returncode == 0 and "channel hook added" in out.stdout, out
    out = vbm(env, "channel", "add", "bad", "--type", "webhook", "--secrets-stdin", stdin="ftp://x\n")
    assert out.returncode == 1 and "url: " in out.stderr
    server = ["--host", smtp_login_server.host, "--port", str(smtp_login_server.port), "--security", "none"]
    out = vbm(
        env,
        "smtp",
        "set",
        *server,
        "--username",
        SMTP_USER,
        "--password-stdin",
        "--json",
        stdin=SMTP_PASSWORD + "\n",
    )
    assert out.returncode == 0, out
    assert SmtpAnswer.model_validate_json(out.stdout).source == "api"
    out = vbm(env, "channel", "add", "mail", "--type", "email", "--to", "ops@example.com", "--json")
    assert ChannelAnswer.model_validate_json(out.stdout).to == ["ops@example.com"], out
    out = vbm(env, "channel", "edit", "mail", "--on", "failure", "--json")
    assert ChannelAnswer.model_validate_json(out.stdout).on == ["failure"], out
    assert ChannelAnswer.model_validate_json(vbm(env, "channel", "show", "mail", "--json").stdout).on == [
        "failure"
    ]
    out = vbm(env, "smtp", "show", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["password"] == "set", out
    out = vbm(env, "channel", "list", "--json")
    ChannelList.model_validate_json(out.stdout)
    assert [(c["name"], c["url"], c["secret"]) for c in json.loads(out.stdout)["channels"]] == [
        ("hook", "set", "set"),
        ("mail", "not set", "not set"),
    ]
    out = vbm(env, "notify", "test")
    assert out.returncode == 0 and "hook: sent" in out.stdout and "mail: sent" in out.stdout, out
    [got] = webhook_receiver.wait_for(1)
    assert got.path == f"/h/{TOKEN}" and "X-VBM-Signature" in got.headers
    smtp_login_server.wait_for(1)
    assert smtp_login_server.logins == [(SMTP_USER, True)]

    out = vbm(env, "secrets", "rotate")
    assert out.returncode == 0 and "4 secret(s) re-encrypted" in out.stdout, out
    out = vbm(env, "notify", "test", "hook")
    assert out.returncode == 0 and "hook: sent" in out.stdout, out
    out = vbm(env, "repo", "info", "--repo", url)
    assert out.returncode == 0, out

    for args in (["channel", "rm", "hook"], ["smtp", "clear"], ["location", "rm", "b"]):
        out = vbm(env, *args, "--json")
        assert out.returncode == 0 and Deleted.model_validate_json(out.stdout).deleted in (
            "hook",
            "smtp",
            "b",
        ), (args, out)
    out = vbm(env, "location", "rm", "default")
    assert out.returncode == 1 and "configuration takes precedence" in out.stderr
    data = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "cli.db" in p.name)
    for secret in (s3_server.secret_key, TOKEN, HMAC_KEY, SMTP_PASSWORD):
        assert secret.encode() not in data
