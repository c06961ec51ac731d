"""Notification channels against real servers: aiosmtpd for email, a local HTTP receiver for
Slack, Teams and generic webhooks (their servers cannot be reached from here)."""

from __future__ import annotations

import hashlib
import hmac
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.db.models import Job
from shared.notify import channels as notify
from shared.notify import log, messages
from shared.notify.channels import NotifyError
from shared.notify.messages import Message
from shared.settings import NotificationSettings, Outcome, Settings
from tests.plugins.procs import free_port
from tests.plugins.smtp import SmtpServer
from tests.plugins.webhook import WebhookReceiver

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
MESSAGE = Message(
    event="run.finished:run-1",
    kind="run.finished",
    outcome="failure",
    title="[vbm] Backup FAILED: nightly (1 of 2 VMs ok)",
    lines=("Job: nightly", "", "- db: failed: snapshot refused"),
    data={"run_id": "run-1", "state": "failed"},
    link="http://vbm.example:8420/api/v1/runs/run-1",
)


def settings(*channels: dict[str, Any], **extra: Any) -> NotificationSettings:
    return NotificationSettings.model_validate({"channels": channels, "timeout": 5, **extra})


async def test_email_reaches_the_recipients_with_the_run_in_the_subject_and_body(
    smtp_server: SmtpServer,
) -> None:
    s = settings(
        {"name": "ops", "type": "email", "to": ["ops@example.com", "lead@example.com"]},
        smtp={
            "host": smtp_server.host,
            "port": smtp_server.port,
            "security": "none",
            "sender": "vbm@example.com",
        },
    )
    await notify.send(s.channels[0], MESSAGE, s)
    [mail] = smtp_server.wait_for(1)
    assert mail["Subject"] == MESSAGE.title and mail["From"] == "vbm@example.com"
    assert smtp_server.received[0].rcpt_tos == ("ops@example.com", "lead@example.com")
    body = mail.get_content()
    assert (
        "- db: failed: snapshot refused" in body
        and "Details: http://vbm.example:8420/api/v1/runs/run-1" in body
    )
    assert mail["X-VBM-Outcome"] == "failure"


async def test_an_smtp_server_that_is_down_or_lacks_starttls_is_a_clear_error(
    smtp_server: SmtpServer,
) -> None:
    down = settings(
        {"name": "ops", "type": "email", "to": ["ops@example.com"]},
        smtp={"host": "127.0.0.1", "port": free_port(), "security": "none", "password": "hunter2"},
    )
    with pytest.raises(NotifyError, match=r"email channel 'ops': 127\.0\.0\.1:\d+: .*refused") as err:
        await notify.send(down.channels[0], MESSAGE, down)
    assert "hunter2" not in str(err.value)
    plain = settings(
        {"name": "ops", "type": "email", "to": ["ops@example.com"]},
        smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "starttls"},
    )
    with pytest.raises(NotifyError, match=r"does not offer STARTTLS; set notifications\.smtp\.security"):
        await notify.send(plain.channels[0], MESSAGE, plain)
    assert smtp_server.received == []


async def test_slack_and_teams_get_their_own_formats(webhook_receiver: WebhookReceiver) -> None:
    s = settings(
        {"name": "chat", "type": "slack", "url": webhook_receiver.url("/services/T000/B000/XXXX")},
        {"name": "teams", "type": "teams", "url": webhook_receiver.url("/workflows/abc")},
    )
    for channel in s.channels:
        await notify.send(channel, MESSAGE, s)
    slack, teams = webhook_receiver.wait_for(2)
    assert slack.path == "/services/T000/B000/XXXX"
    text = slack.json()["text"]
    assert text.startswith(f"*{MESSAGE.title}*") and "db: failed: snapshot refused" in text
    card = teams.json()["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    blocks = card["content"]["body"]
    assert blocks[0]["text"] == MESSAGE.title and blocks[0]["color"] == "Attention"
    assert any("snapshot refused" in b["text"] for b in blocks)


async def test_a_generic_webhook_is_signed_and_names_its_delivery(webhook_receiver: WebhookReceiver) -> None:
    s = settings({"name": "hook", "type": "webhook", "url": webhook_receiver.url(), "secret": "s3cret"})
    await notify.send(s.channels[0], MESSAGE, s)
    [got] = webhook_receiver.wait_for(1)
    expected = "sha256=" + hmac.new(b"s3cret", got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-VBM-Signature"] == expected
    assert got.headers["X-VBM-Event"] == "run.finished"
    assert got.headers["X-VBM-Delivery"] == log.notification_id(MESSAGE.event, "hook")
    body = got.json()
    assert body["outcome"] == "failure" and body["data"] == {"run_id": "run-1", "state": "failed"}


async def test_webhook_failures_say_what_and_never_show_the_url(webhook_receiver: WebhookReceiver) -> None:
    secret_path = "/services/T000/B000/very-secret-token"
    s = settings({"name": "chat", "type": "slack", "url": webhook_receiver.url(secret_path)}, timeout=0.5)
    webhook_receiver.answers = [503]
    with pytest.raises(NotifyError, match=r"slack channel 'chat': 127\.0\.0\.1:\d+ answered HTTP 503") as err:
        await notify.send(s.channels[0], MESSAGE, s)
    assert "very-secret-token" not in str(err.value)
    webhook_receiver.hang = True
    with pytest.raises(NotifyError, match=r"no answer within 0\.5 s .*raise notifications.timeout") as err:
        await notify.send(s.channels[0], MESSAGE, s)
    assert "very-secret-token" not in str(err.value)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = settings({"name": "chat", "type": "slack", "url": f"http://127.0.0.1:{port}/very-secret-token"})
    with pytest.raises(NotifyError, match=r"cannot post to 127\.0\.0\.1:\d+") as err:
        await notify.send(gone.channels[0], MESSAGE, gone)
    assert "very-secret-token" not in str(err.value)


def test_channels_are_chosen_by_scope_and_outcome_and_a_job_can_override() -> None:
    s = settings(
        {"name": "ops", "type": "slack", "url": "https://hooks.example/1"},  # failure, warning
        {"name": "all", "type": "slack", "url": "https://hooks.example/2", "on": ["success", "failure"]},
        {"name": "team", "type": "webhook", "url": "https://hooks.example/3", "scope": "jobs"},
    )

    def names(job: Job | None, outcome: Outcome) -> list[str]:
        return [c.name for c in messages.channels_for(s, job, outcome)]

    plain = Job(options={})
    named = Job(options={"notify": {"channels": ["team"], "on": None}})
    loud = Job(options={"notify": {"channels": ["team"], "on": ["success", "warning", "failure"]}})
    assert names(plain, "success") == ["all"]
    assert names(plain, "failure") == ["ops", "all"]
    assert names(plain, "warning") == ["ops"]
    assert names(None, "failure") == ["ops", "all"]  # an alert without a job: scope "all" only
    assert names(named, "failure") == ["ops", "all", "team"]
    assert names(loud, "success") == ["ops", "all", "team"]


def test_bad_channel_settings_say_what_to_fix() -> None:
    smtp = {"host": "x"}
    cases = [
        ({"channels": [{"name": "m", "type": "email"}], "smtp": smtp}, "an email channel needs `to`"),
        ({"channels": [{"name": "m", "type": "email", "to": ["nobody"]}], "smtp": smtp}, "address: nobody"),
        ({"channels": [{"name": "m", "type": "email", "to": ["a@b"]}]}, "notifications.smtp.host is not"),
        ({"channels": [{"name": "s", "type": "slack"}]}, "a slack channel needs `url`"),
        ({"channels": [{"name": "s", "type": "teams", "url": "ftp://x"}]}, "a teams channel needs `url`"),
        ({"channels": [{"name": "s", "type": "slack", "url": "https://x/1"}] * 2}, "repeated: s"),
        ({"channels": [{"name": "s", "type": "pager", "url": "https://x/1"}]}, "'telegram' or 'sendmail'"),
        ({"retry": []}, "at least 1 item"),
    ]  # fmt: skip
    for body, expected in cases:
        with pytest.raises(ValidationError, match=expected):
            NotificationSettings.model_validate(body)
    assert "https://x/1" not in repr(
        Settings(notifications={"channels": [{"name": "s", "type": "slack", "url": "https://x/1"}]})
    )


def test_the_delivery_log_keeps_90_days(tmp_path: Path) -> None:
    from shared.db import make_engine, make_sessionmaker, upgrade
    from shared.db.models import Notification

    engine = make_engine(f"sqlite:///{tmp_path / 'vbm.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        for days in (1, 89, 91, 400):
            s.add(
                Notification(
                    id=f"ntf-{days}", event=f"alert.raised:a{days}", channel="ops", outcome="failure",
                    title="t", state="sent", attempts=1, created_at=NOW - timedelta(days=days),
                )
            )  # fmt: skip
    with sessions.begin() as s:
        assert log.trim_log(s, NOW) == 2
    with sessions() as s:
        assert sorted(r.id for r in s.query(Notification)) == ["ntf-1", "ntf-89"]
    engine.dispose()
