"""Notifications: telling people when a run ends and when an alert is raised.

`for_run` and `for_alert` turn an event into a `Message` (read from the database: the job, its
VMs, what each moved or why it failed) and the channels that should hear of it; `send` delivers
one message to one channel (email through SMTP, Slack and Teams incoming webhooks, or a generic
JSON webhook signed with HMAC-SHA256), within `notifications.timeout` seconds, or raises
`NotifyError` saying what went wrong without the channel's secrets (passwords, webhook URLs).
The notifier service keeps the delivery log (`Notification` rows) and the retries.

Which channels: every channel of scope `all`, plus the channels the run's job names
(`options.notify.channels`); each takes the outcomes in its `on` unless the job sets its own
`options.notify.on`. Outcomes: a run succeeded -> success; partial or cancelled -> warning;
failed -> failure. An alert of severity error or critical -> failure, warning or info -> warning.
Alerts a run's message already tells (a VM of the run failed) are not sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.contracts import AlertRaised, RestoreDone, RunFinished
from shared.db.models import Job, Notification, Restore, RestorePointRow, Run, Task
from shared.model.units import human_bytes
from shared.settings import ChannelSettings, NotificationSettings, Outcome

RUN_OUTCOME: dict[str, Outcome] = {
    "succeeded": "success",
    "warning": "warning",
    "partial": "warning",
    "cancelled": "warning",
    "failed": "failure",
}
ALERT_OUTCOME: dict[str, Outcome] = {
    "critical": "failure",
    "error": "failure",
    "warning": "warning",
    "info": "warning",
}
# Alerts about one VM of a run: the run's own message names the VM and the reason.
TOLD_BY_RUN = frozenset({"backup-failed", "restore_failed", "verify_failed"})
NOTIFICATION_FAILED = "notification_failed"


class NotifyError(Exception):
    """A message could not be delivered; the text names the channel and the reason, no secret."""


@dataclass(frozen=True)
class Message:
    event: str  # the event's message id: one message per event and channel
    kind: str  # "run.finished", "alert.raised" or "test"
    outcome: Outcome
    title: str
    lines: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)
    link: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines + ((f"Details: {self.link}",) if self.link else ()))


# -- which channels -------------------------------------------------------------------------


def channels_for(settings: NotificationSettings, job: Job | None, outcome: Outcome) -> list[ChannelSettings]:
    notify = ((job.options or {}).get("notify") or {}) if job is not None else {}
    named = set(notify.get("channels") or ())
    job_on = notify.get("on")
    chosen = []
    for channel in settings.channels:
        if channel.scope == "jobs" and channel.name not in named:
            continue
        if outcome in (job_on or channel.on):
            chosen.append(channel)
    return chosen


def notification_id(event: str, channel: str) -> str:
    return "ntf-" + hashlib.sha256(f"{event}|{channel}".encode()).hexdigest()[:32]


# -- what to say ----------------------------------------------------------------------------


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = int((end - start).total_seconds())
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"
        if seconds >= 3600
        else (f"{seconds // 60}m{seconds % 60:02d}s")
    )


def _link(settings: NotificationSettings, path: str) -> str | None:
    return settings.public_url.rstrip("/") + path if settings.public_url else None


def for_run(
    session: Session, event: RunFinished, settings: NotificationSettings
) -> tuple[Message, list[ChannelSettings]] | None:
    run = session.get(Run, event.run_id)
    if run is None:
        return None
    job = session.get(Job, run.job_id)
    job_name = job.name if job else run.job_id
    outcome = RUN_OUTCOME[event.state]
    test = bool(job and (job.options or {}).get("restore_test"))
    what = "Restore test" if test else "Backup"
    vms: list[dict[str, Any]] = []
    if test:
        for r in session.scalars(
            select(Restore).where(Restore.run_id == run.id).order_by(Restore.created_at)
        ):
            vms.append({"vm": str(r.target.get("name", "")), "state": r.state, "error": r.error})
    else:
        for t in session.scalars(select(Task).where(Task.run_id == run.id).order_by(Task.vm_name)):
            vms.append(
                {
                    "vm": t.vm_name,
                    "state": t.state,
                    "kind": t.kind,
                    "bytes_read": t.bytes_read,
                    "bytes_stored": t.bytes_stored,
                    "restore_point": t.restore_point_id,
                    "error": t.error,
                    "warnings": list(t.warnings or []),
                }
            )
    ok = sum(v["state"] == "succeeded" for v in vms)
    verdict = {
        "succeeded": "succeeded",
        "warning": "succeeded with warnings",
        "partial": "partly failed",
        "cancelled": "cancelled",
    }.get(event.state, "FAILED")
    title = f"[vbm] {what} {verdict}: {job_name} ({ok} of {len(vms)} VMs ok)"
    lines = [
        f"Job: {job_name} ({run.job_id})",
        f"Run: {run.id} ({run.trigger}), {event.state}",
        f"Started: {_when(run.started_at or run.created_at)}; finished: {_when(run.finished_at)}"
        f" ({_duration(run.started_at or run.created_at, run.finished_at)})",
    ]
    if run.error:
        lines.append(f"Error: {run.error}")
    lines.append("")
    for v in vms:
        if v["state"] == "succeeded" and not test:
            lines.append(
                f"- {v['vm']}: {v['kind'] or 'backup'} ok, {human_bytes(v['bytes_read'])} read,"
                f" {human_bytes(v['bytes_stored'])} stored, restore point {v['restore_point']}"
            )
            lines.extend(f"    warning: {w}" for w in v.get("warnings") or [])
        else:
            lines.append(f"- {v['vm']}: {v['state']}" + (f": {v['error']}" if v["error"] else ""))
    data = {"run_id": run.id, "job_id": run.job_id, "job": job_name, "state": event.state, "vms": vms}
    message = Message(
        event=event.msg_id(),
        kind="run.finished",
        outcome=outcome,
        title=title,
        lines=tuple(lines),
        data=data,
        link=_link(settings, f"/api/v1/runs/{run.id}"),
    )
    return message, channels_for(settings, job, outcome)


def for_alert(
    session: Session, event: AlertRaised, settings: NotificationSettings
) -> tuple[Message, list[ChannelSettings]] | None:
    run = session.get(Run, event.run_id) if event.run_id else None
    if run is not None and event.kind in TOLD_BY_RUN:
        return None  # the run's message tells it
    job = session.get(Job, run.job_id) if run is not None else None
    outcome = ALERT_OUTCOME[event.severity]
    where = f" ({event.vm_name})" if event.vm_name else ""
    title = f"[vbm] {event.severity.upper()} {event.kind}{where}"
    lines = [event.message, "", f"Raised: {_when(event.occurred_at)}", f"Alert: {event.alert_id}"]
    if run is not None:
        lines.append(f"Run: {run.id}" + (f" of job {job.name}" if job else ""))
    data = event.model_dump(mode="json", exclude={"schema_version"})
    message = Message(
        event=event.msg_id(),
        kind="alert.raised",
        outcome=outcome,
        title=title,
        lines=tuple(lines),
        data=data,
        link=_link(settings, "/api/v1/alerts"),
    )
    channels = channels_for(settings, job, outcome)
    if event.kind == NOTIFICATION_FAILED:  # not over the channels that are failing
        failing = failing_channels(session)
        channels = [c for c in channels if c.name not in failing]
    return message, channels


KEEP_LOG = timedelta(days=90)


def trim_log(session: Session, now: datetime) -> int:
    """Forget deliveries older than `KEEP_LOG` (the log is for recent trouble); how many."""
    rows = session.scalars(select(Notification).where(Notification.created_at < now - KEEP_LOG)).all()
    for row in rows:
        session.delete(row)
    return len(rows)


RESTORE_OUTCOME: dict[str, Outcome] = {"succeeded": "success", "cancelled": "warning"}


def for_restore(
    session: Session, event: RestoreDone, settings: NotificationSettings
) -> tuple[Message, list[ChannelSettings]] | None:
    """A restore someone asked for ended: succeeded or cancelled (a failed one is told by its
    `restore_failed` alert; restore tests by their run's message)."""
    row = session.get(Restore, event.restore_id)
    if row is None or row.run_id or event.state not in RESTORE_OUTCOME:
        return None
    rp = session.get(RestorePointRow, row.restore_point_id)
    job = session.get(Job, rp.job_id) if rp is not None and rp.job_id else None
    outcome = RESTORE_OUTCOME[event.state]
    source = f"{rp.vm_name}, restore point {rp.id} of {_when(rp.finished_at)}" if rp else row.restore_point_id
    title = f"[vbm] Restore {event.state}: {event.vm_name} ({row.mode})"
    lines = [
        f"Restore: {row.id} ({row.mode})",
        f"From: {source}",
        f"To: VM {event.vm_name}" + (f" ({event.vm_moref})" if event.vm_moref else ""),
        f"Started: {_when(row.started_at or row.created_at)}; finished: {_when(row.finished_at)}"
        f" ({_duration(row.started_at or row.created_at, row.finished_at)})",
    ]
    if event.error:
        lines.append(f"Note: {event.error}")
    data = event.model_dump(mode="json", exclude={"schema_version"})
    message = Message(
        event=event.msg_id(),
        kind="restore.done",
        outcome=outcome,
        title=title,
        lines=tuple(lines),
        data=data,
        link=_link(settings, f"/api/v1/restores/{row.id}"),
    )
    return message, channels_for(settings, job, outcome)


def failing_channels(session: Session) -> set[str]:
    """Channels whose newest delivery failed."""
    newest: dict[str, str] = {}
    for row in session.scalars(select(Notification).order_by(Notification.created_at, Notification.id)):
        newest[row.channel] = row.state
    return {name for name, state in newest.items() if state == "failed"}


def test_message(now: datetime) -> Message:
    return Message(
        event=f"test:{now.isoformat()}",
        kind="test",
        outcome="success",
        title="[vbm] Test notification",
        lines=(f"vbm can reach this channel ({_when(now)}).",),
        data={"test": True},
    )


# -- how to deliver -------------------------------------------------------------------------


async def send(channel: ChannelSettings, message: Message, settings: NotificationSettings) -> None:
    """Deliver `message` over `channel` within `settings.timeout`; NotifyError if it failed."""
    try:
        async with asyncio.timeout(settings.timeout):
            if channel.type == "email":
                await asyncio.to_thread(_send_email, channel, message, settings)
            else:
                await _post(channel, message, settings)
    except TimeoutError:
        raise NotifyError(
            f"{channel.type} channel {channel.name!r}: no answer within {settings.timeout:g} s"
            f" ({_endpoint(channel, settings)}); raise notifications.timeout if it is just slow"
        ) from None


def _endpoint(channel: ChannelSettings, settings: NotificationSettings) -> str:
    if channel.type == "email":
        return f"{settings.smtp.host}:{settings.smtp.port}"
    parts = urlsplit(channel.url.get_secret_value())  # the host only: the path is the secret
    return parts.netloc.rsplit("@", 1)[-1]


def payload(channel: ChannelSettings, message: Message) -> dict[str, Any]:
    """The JSON body a webhook channel posts."""
    if channel.type == "slack":
        return {"text": f"*{message.title}*\n```\n{message.text}\n```"}
    if channel.type == "teams":
        facts = [
            {"type": "TextBlock", "text": line or " ", "wrap": True, "spacing": "None"}
            for line in message.lines
        ]
        if message.link:
            facts.append({"type": "TextBlock", "text": f"[Details]({message.link})", "wrap": True})
        color = {"success": "Good", "warning": "Warning", "failure": "Attention"}[message.outcome]
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": message.title, "weight": "Bolder", "size": "Medium",
                 "color": color, "wrap": True},
                *facts,
            ],
        }  # fmt: skip
        return {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }
    return {
        "event": message.kind,
        "outcome": message.outcome,
        "title": message.title,
        "text": message.text,
        "link": message.link,
        "data": message.data,
    }


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _post(channel: ChannelSettings, message: Message, settings: NotificationSettings) -> None:
    body = json.dumps(payload(channel, message), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "vbm-notifier",
        "X-VBM-Event": message.kind,
        "X-VBM-Delivery": notification_id(message.event, channel.name),
    }
    if channel.secret.get_secret_value():
        headers["X-VBM-Signature"] = signature(channel.secret.get_secret_value(), body)
    where = _endpoint(channel, settings)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                channel.url.get_secret_value(), data=body, headers=headers, allow_redirects=False
            ) as resp,
        ):
            if resp.status // 100 != 2:
                text = (await resp.text(errors="replace"))[:200].strip()
                raise NotifyError(
                    f"{channel.type} channel {channel.name!r}: {where} answered HTTP {resp.status}"
                    + (f": {text}" if text else "")
                )
    except aiohttp.ClientError as exc:
        reason = str(exc).replace(channel.url.get_secret_value(), where) or type(exc).__name__
        raise NotifyError(
            f"{channel.type} channel {channel.name!r}: cannot post to {where}: {reason}"
        ) from None


def _send_email(channel: ChannelSettings, message: Message, settings: NotificationSettings) -> None:
    smtp = settings.smtp
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = smtp.sender
    mail["To"] = ", ".join(channel.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=smtp.sender.rsplit("@", 1)[-1] or None)
    mail["X-VBM-Event"] = message.kind
    mail["X-VBM-Outcome"] = message.outcome
    mail.set_content(message.text + "\n")
    context = ssl.create_default_context(cafile=smtp.ca_file)
    where = f"{smtp.host}:{smtp.port}"
    try:
        client: smtplib.SMTP
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=settings.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=settings.timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.username:
                client.login(smtp.username, smtp.password.get_secret_value())
            client.send_message(mail)
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyError(
            f"email channel {channel.name!r}: {where} refused the login of {smtp.username!r}"
            f" ({exc.smtp_code}); check notifications.smtp.username and password"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotifyError(
            f"email channel {channel.name!r}: {where} refused the recipients {', '.join(exc.recipients)}"
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise NotifyError(
            f"email channel {channel.name!r}: {where} does not offer STARTTLS;"
            " set notifications.smtp.security to tls (port 465) or none (a trusted local relay)"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"email channel {channel.name!r}: {where}: {exc or type(exc).__name__}") from None


# -- what the API and the CLI show ----------------------------------------------------------


def channel_view(channel: ChannelSettings, settings: NotificationSettings) -> dict[str, Any]:
    """A channel without its secrets: the URL's host only, never its path or the HMAC key."""
    return {
        "name": channel.name,
        "type": channel.type,
        "on": list(channel.on),
        "scope": channel.scope,
        "to": list(channel.to),
        "endpoint": _endpoint(channel, settings),
        "signed": bool(channel.secret.get_secret_value()),
    }


def delivery_view(row: Notification) -> dict[str, Any]:
    return {
        "id": row.id,
        "event": row.event,
        "channel": row.channel,
        "outcome": row.outcome,
        "title": row.title,
        "state": row.state,
        "attempts": row.attempts,
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
    }


def deliveries(session: Session, limit: int = 50) -> list[Notification]:
    query = select(Notification).order_by(Notification.created_at.desc(), Notification.id).limit(limit)
    return list(session.scalars(query))


async def send_test(
    settings: NotificationSettings, now: datetime, name: str | None = None
) -> list[dict[str, Any]]:
    """Send a test message over one channel (or each); one result per channel, errors included.
    KeyError names a channel that is not configured."""
    if name is not None and settings.channel(name) is None:
        raise KeyError(name)
    message = test_message(now)
    results = []
    for channel in settings.channels:
        if name is not None and channel.name != name:
            continue
        try:
            await send(channel, message, settings)
            results.append({"channel": channel.name, "ok": True, "error": None})
        except NotifyError as exc:
            results.append({"channel": channel.name, "ok": False, "error": str(exc)})
    return results
