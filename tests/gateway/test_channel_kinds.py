"""/api/v1/channels with the Telegram and sendmail types and per-channel levels: validation names
the field (422), the bot token is write-only (never in an answer, the audit trail or the
database file), "Send test" goes through a local Bot API server and a fake sendmail program and
reports their exact failure; `vbm channel add` stores the same channel."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from services.gateway.answers.settings import ChannelAnswer, ChannelList
from shared.catalog import secrets as vault_secrets
from shared.clock import utcnow
from shared.db.audit import AuditRecord
from tests.gateway.conftest import Api, MakeApi
from tests.gateway.test_credentials import assert_nowhere
from tests.gateway.test_vcenters import Answers
from tests.plugins.telegram import TOKEN, BotApi
from tests.test_cli_jobs import ROOT

FAKE_SENDMAIL = """#!/bin/sh
cat > {dir}/mail
if [ -f {dir}/fail ]; then echo "sendmail: fatal: the queue is full" >&2; exit 75; fi
"""


def vbm(api: Api, db_url: str, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update({"VBM_DATA_DIR": str(api.ctx.settings.data_dir), "VBM_DATABASE_URL": db_url})
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


async def test_telegram_and_sendmail_channels_with_levels(
    make_api: MakeApi, db_url: str, bot_api: BotApi, tmp_path: Path
) -> None:
    api = await make_api(db_url)
    call = Answers(api)
    tg = {"name": "tg", "type": "telegram", "token": TOKEN, "chat_id": "-1001234567890",
          "api_url": bot_api.api_url, "level": "warning",
          "on": ["failure", "warning", "success"]}  # fmt: skip
    for body, field in [
        (tg | {"chat_id": ""}, "chat_id"),
        (tg | {"token": "not-a-token"}, "token"),
        ({k: v for k, v in tg.items() if k != "token"}, "token"),
        (tg | {"api_url": "ftp://bots"}, "api_url"),
        (tg | {"level": "loud"}, "level"),
        ({"name": "sm", "type": "sendmail", "to": ["ops@example.com"], "sendmail": "sendmail"}, "sendmail"),
        ({"name": "sm", "type": "sendmail"}, "to"),
    ]:
        status, problem = await call("POST", "/channels", json=body)
        assert status == 422 and problem["detail"].startswith(f"{field}: "), (body, problem)
        assert problem["errors"][0]["field"] == field and "AAH-test" not in str(problem)
    status, added = await call("POST", "/channels", json=tg)
    assert status == 201, added
    answer = ChannelAnswer.model_validate(added)
    assert answer.token == "set" and answer.chat_id == "-1001234567890" and answer.level == "warning"
    assert answer.endpoint == f"127.0.0.1:{bot_api.port}" and answer.api_url == bot_api.api_url

    status, result = await call("POST", "/notifications/test", json={"channel": "tg"})
    assert status == 200 and result["ok"] is True, result
    assert bot_api.posted[0].text.startswith("[vbm] Test notification")
    status, changed = await call("PUT", "/channels/tg", json={"chat_id": "4242"})
    assert status == 200 and changed["token"] == "set" and changed["level"] == "warning"
    bot_api.blocked = {"4242"}
    status, result = await call("POST", "/notifications/test", json={"channel": "tg"})
    assert status == 200 and result["ok"] is False
    assert "Forbidden: bot was blocked by the user" in result["results"][0]["error"]

    program = tmp_path / "sendmail"
    program.write_text(FAKE_SENDMAIL.format(dir=tmp_path))
    program.chmod(0o755)
    sm = {"name": "sm", "type": "sendmail", "to": ["ops@example.com"], "sendmail": str(program)}
    status, added = await call("POST", "/channels", json=sm)
    assert status == 201 and added["sendmail"] == str(program) and added["level"] == "info", added
    status, result = await call("POST", "/notifications/test", json={"channel": "sm"})
    assert status == 200 and result["ok"] is True, result
    assert "Subject: [vbm] Test notification" in (tmp_path / "mail").read_text()
    (tmp_path / "fail").touch()
    status, result = await call("POST", "/notifications/test", json={"channel": "sm"})
    assert status == 200 and result["ok"] is False
    assert result["results"][0]["error"] == (
        f"sendmail channel 'sm': {program} exited with code 75: sendmail: fatal: the queue is full"
    )

    # the CLI stores the same kind of channel: the token from stdin, never on the command line
    done = await asyncio.to_thread(
        vbm, api, db_url, "channel", "add", "tg2", "--type", "telegram", "--chat-id", "@vbm_alerts",
        "--api-url", bot_api.api_url, "--level", "critical", "--secrets-stdin", "--json", stdin=TOKEN + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["token"] == "set" and shown["level"] == "critical" and TOKEN not in done.stdout
    status, listed = await call("GET", "/channels")
    assert [c.name for c in ChannelList.model_validate(listed).channels] == ["sm", "tg", "tg2"]
    status, result = await call("POST", "/notifications/test", json={"channel": "tg2"})
    assert result["ok"] is True and bot_api.posted[-1].chat_id == "@vbm_alerts"

    assert vault_secrets.rotate(api.ctx.engine, api.ctx.settings, utcnow()).values == 2  # the two tokens
    status, result = await call("POST", "/notifications/test", json={"channel": "tg2"})
    assert result["ok"] is True
    status, changed = await call(
        "PUT", "/channels/tg2", json={"type": "webhook", "url": "https://hooks.example/1"}
    )
    assert status == 200 and changed["token"] == "not set" and "chat_id" not in changed, changed

    with api.ctx.sessions() as s:
        records = list(s.scalars(select(AuditRecord)))
    changes = [(r.action, r.result) for r in records if r.action.endswith(("/channels", "/channels/{name}"))]
    assert ("POST /api/v1/channels", "ok") in changes and ("PUT /api/v1/channels/{name}", "ok") in changes
    assert any(r.result.startswith("422") for r in records if r.action == "POST /api/v1/channels")
    assert all(TOKEN not in f"{r.params} {r.result} {r.target}" for r in records) and call.leaked(TOKEN) == []
    assert_nowhere(api, db_url, tmp_path, TOKEN)
