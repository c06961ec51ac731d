"""Notifications end to end: runs and alerts of a real pipeline reach email (aiosmtpd) and webhook
channels (a local HTTP receiver), once per event and channel, retried when a channel fails and
given up with an alert told over the channels that still work."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from shared.catalog.alerts import raise_alert
from shared.db.models import Notification
from tests.pipeline.conftest import Pipeline, now
from tests.pipeline.test_faults import FAST, backup, eventually, small_spec
from tests.plugins.smtp import SmtpServer
from tests.plugins.webhook import WebhookReceiver


def notifications(p: Pipeline) -> list[Notification]:
    with p.sessions() as s:
        return list(s.scalars(select(Notification).order_by(Notification.created_at)))


async def test_runs_and_alerts_reach_each_channel_once_retried_then_given_up(
    pipeline_factory: Callable[..., Pipeline], smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    channels = [
        {"name": "mail", "type": "email", "to": ["ops@example.com"]},
        {
            "name": "chat",
            "type": "slack",
            "url": webhook_receiver.url("/slack"),
            "on": ["success", "failure"],
        },
        {
            "name": "team",
            "type": "webhook",
            "url": webhook_receiver.url("/team"),
            "scope": "jobs",
            "secret": "k",
        },
    ]
    p = pipeline_factory(
        small_spec(),
        **FAST,
        VBM_NOTIFICATIONS=json.dumps(
            {
                "smtp": {"host": smtp_server.host, "port": smtp_server.port, "security": "none"},
                "channels": channels,
                "retry": [0.3, 0.3],
                "timeout": 5,
                "public_url": "http://vbm.example:8420",
            }
        ),
    )
    p.start()
    job = p.create_job("nightly", ["web"], options={"notify": {"channels": ["team"]}})

    # A success: only "chat" wants successes; its first answer is a 500, the retry gets through.
    webhook_receiver.answers = [500]
    run = await backup(p, job)
    ok = webhook_receiver.wait_for(2, path="/slack")
    assert [r.json()["text"].splitlines()[0] for r in ok] == [
        "*[vbm] Backup succeeded: nightly (1 of 1 VMs ok)*"
    ] * 2
    assert f"Details: http://vbm.example:8420/api/v1/runs/{run.id}" in ok[1].json()["text"]
    [row] = await eventually(
        lambda: [n for n in notifications(p) if n.state == "sent"], what="chat's row says sent"
    )
    assert (row.channel, row.attempts, row.outcome) == ("chat", 2, "success")

    # A failure: one message per channel that wants failures (the job names "team"); the VM's
    # backup-failed alert is told by the run's message, not a second time.
    p.lab.fault("CreateSnapshot_Task", "task-error", fault="InvalidState")
    failed = await backup(p, job, "failed")
    p.lab.clear_faults()
    [mail] = smtp_server.wait_for(1)
    assert mail["Subject"] == "[vbm] Backup FAILED: nightly (0 of 1 VMs ok)"
    assert "- web: failed:" in mail.get_content() and "InvalidState" in mail.get_content()
    [team] = webhook_receiver.wait_for(1, path="/team")
    assert team.json()["data"]["run_id"] == failed.id and team.headers["X-VBM-Signature"].startswith(
        "sha256="
    )
    webhook_receiver.wait_for(3, path="/slack")
    with p.sessions.begin() as s:  # news older than a day (a notifier that was down) is not sent
        raise_alert(
            s, key="old", kind="storage_usage", severity="warning", now=now() - timedelta(hours=25),
            message="repository at 81% (yesterday)",
        )  # fmt: skip
    await p.relay.publish_pending()
    await asyncio.sleep(1.5)  # nothing more arrives (no alert repeats the run's news, no resend)
    assert len(smtp_server.received) == 1 and len(webhook_receiver.received) == 4

    # A channel that keeps failing: tried 1 + 2 times, then given up; the notification_failed
    # alert goes to "mail", not to the failing "chat".
    webhook_receiver.answers = [500, 500, 500]
    with p.sessions.begin() as s:
        raise_alert(
            s, key="test-damage", kind="verify_failed", severity="error", now=now(),
            message="restore point rp-x: chunk 1f2e... is damaged", vm_name="web",
        )  # fmt: skip
    await p.relay.publish_pending()
    mails = smtp_server.wait_for(3, timeout=20)
    assert mails[1]["Subject"] == "[vbm] ERROR verify_failed (web)"
    assert mails[2]["Subject"] == "[vbm] ERROR notification_failed"
    body = mails[2].get_content()
    assert "'[vbm] ERROR verify_failed (web)' could not be delivered after 3 attempts" in body
    assert "slack channel 'chat'" in body and "HTTP 500" in body and "/slack" not in body
    assert len(webhook_receiver.wait_for(6, path="/slack")) == 6
    await asyncio.sleep(1.5)
    assert len(smtp_server.received) == 3 and len(webhook_receiver.received) == 7
    chat = [n for n in notifications(p) if n.channel == "chat" and n.state == "failed"]
    assert len(chat) == 1 and chat[0].attempts == 3 and "HTTP 500" in (chat[0].error or "")
    out, err, code = await p.cli("notify", "log")
    assert code == 0 and "failed chat             x3 [vbm] ERROR verify_failed (web)" in out, out + err
    assert "sent   chat             x2 [vbm] Backup succeeded: nightly" in out
    out, err, code = await p.cli("alerts")
    assert code == 0 and "notification_failed" in out and "verify_failed" in out, out + err
    ids = [line.split()[3] for line in out.splitlines() if line.startswith("20")]
    out, err, code = await p.cli("alerts", "ack", *ids, "alert-nope")
    assert code == 1 and f"{len(ids)} alert(s) acknowledged" in out and "no alert 'alert-nope'" in out
    out, err, code = await p.cli("alerts")
    assert out.strip() == "0 open alert(s)", out

    await eventually(lambda: not p.open_ledger(), what="the ledger entry of the failed create closes")
    p.assert_clean()
