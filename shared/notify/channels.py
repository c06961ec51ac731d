"""The channels that carry a notification: `send` delivers one message to one channel (email
through SMTP or the local sendmail program (`shared.notify.mail`), Telegram's Bot API
(`shared.notify.telegram`), Slack and Teams incoming webhooks, or a generic JSON webhook signed
with HMAC-SHA256), within `notifications.timeout` seconds, or raises `NotifyError` saying what
went wrong without the channel's secrets (passwords, webhook URLs, bot tokens). What a message
says is `shared.notify.messages`; the notifier service keeps the delivery log
(`shared.notify.log`) and the retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared.notify import mail, telegram
from shared.notify.errors import NotifyError
from shared.notify.log import notification_id
from shared.notify.messages import Message, test_message
from shared.settings import ChannelSettings, NotificationSettings

__all__ = ["NotifyError", "channel_view", "channels_view", "payload", "send", "send_test", "tested"]


# -- how to deliver -------------------------------------------------------------------------


async def send(channel: ChannelSettings, message: Message, settings: NotificationSettings) -> None:
    """Deliver `message` over `channel` within `settings.timeout`; NotifyError if it failed."""
    try:
        async with asyncio.timeout(settings.timeout):
            if channel.type == "email":
                await asyncio.to_thread(mail.send_smtp, channel, message, settings)
            elif channel.type == "sendmail":
                await mail.send_sendmail(channel, message, settings)
            elif channel.type == "telegram":
                await telegram.send(channel, message)
            else:
                await _post(channel, message, settings)
    except TimeoutError:
        if channel.type == "sendmail":
            raise NotifyError(
                f"sendmail channel {channel.name!r}: {channel.sendmail} did not finish within"
                f" {settings.timeout:g} s and was killed; raise notifications.timeout if it is just slow"
            ) from None
        raise NotifyError(
            f"{channel.type} channel {channel.name!r}: no answer within {settings.timeout:g} s"
            f" ({_endpoint(channel, settings)}); raise notifications.timeout if it is just slow"
        ) from None


def _endpoint(channel: ChannelSettings, settings: NotificationSettings) -> str:
    if channel.type == "email":
        return f"{settings.smtp.host}:{settings.smtp.port}"
    if channel.type == "sendmail":
        return channel.sendmail
    if channel.type == "telegram":
        return telegram.host_of(channel)
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
        "level": message.level,
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


# -- what the API and the CLI show ----------------------------------------------------------


def channel_view(channel: ChannelSettings, settings: NotificationSettings) -> dict[str, Any]:
    """A channel without its secrets: the URL's host only, never its path or the HMAC key."""
    return {
        "name": channel.name,
        "type": channel.type,
        "on": list(channel.on),
        "level": channel.level,
        "scope": channel.scope,
        "to": list(channel.to),
        "endpoint": _endpoint(channel, settings),
        "signed": bool(channel.secret.get_secret_value()),
    } | _type_view(channel)


def _type_view(channel: ChannelSettings) -> dict[str, Any]:
    """The plain fields of the channel's type (never the bot token: only whether it is set)."""
    if channel.type == "telegram":
        return {"chat_id": channel.chat_id, "api_url": channel.api_url,
                "token": "set" if channel.token.get_secret_value() else "not set"}  # fmt: skip
    if channel.type == "sendmail":
        return {"sendmail": channel.sendmail}
    return {}


def channels_view(settings: NotificationSettings) -> list[dict[str, Any]]:
    """Every channel without its secrets, as the API and `vbm notify channels --json` show them."""
    return [channel_view(c, settings) for c in settings.channels]


def tested(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What `send_test` found, as the API and `vbm notify test --json` answer it."""
    return {"results": results, "ok": all(r["ok"] for r in results)}


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
