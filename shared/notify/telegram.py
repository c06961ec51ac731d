"""Telegram channels: a bot posts the message to a chat through the Bot API
(`POST <api_url>/bot<token>/sendMessage`, JSON `chat_id`, `text` in HTML parse mode,
`disable_web_page_preview`).

The token is part of the URL's path, so no error names the URL: only the API server's host
(api.telegram.org, or the configured `api_url`'s). The Bot API answers `{"ok": false,
"error_code", "description", "parameters"}` when it refuses: the description is the error
("Forbidden: bot was blocked by the user", "Bad Request: chat not found"). A 429 asks to wait
`parameters.retry_after` seconds: a short wait (up to RETRY_WAIT, within the channel's timeout)
is waited once, a longer one is reported (the notifier's own retries come later).
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared.notify.errors import NotifyError
from shared.notify.messages import Message
from shared.settings import ChannelSettings

TEXT_LIMIT = 4096  # characters Telegram takes in one message (after entities are parsed)
RETRY_WAIT = 5.0  # seconds of a 429's retry_after waited before trying once more
HINTS = {
    401: "check the channel's bot token",
    403: "the bot cannot write to this chat: add it to the group or channel, or start a chat with it",
    400: "check the channel's chat_id (the bot must be a member of that chat)",
    404: "check the channel's bot token and api_url",
}


def host_of(channel: ChannelSettings) -> str:
    """The Bot API server as errors name it (never the path: it holds the token)."""
    return urlsplit(channel.api_url).netloc.rsplit("@", 1)[-1]


def body(channel: ChannelSettings, message: Message) -> dict[str, Any]:
    """The sendMessage request: the title in bold, the text (cut to Telegram's limit) below it."""
    title = f"<b>{html.escape(message.title)}</b>\n"
    text = message.text
    room = TEXT_LIMIT - len(message.title) - 40
    if len(text) > room:
        text = text[:room].rstrip() + "\n... (cut: the whole message is in vbm)"
    return {
        "chat_id": channel.chat_id,
        "text": title + html.escape(text),
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }


async def send(channel: ChannelSettings, message: Message) -> None:
    """Post `message`; NotifyError naming the Bot API's description when it refuses."""
    token = channel.token.get_secret_value()
    url = f"{channel.api_url.rstrip('/')}/bot{token}/sendMessage"
    where, name = host_of(channel), channel.name
    data = json.dumps(body(channel, message)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "vbm-notifier"}
    try:
        async with aiohttp.ClientSession() as http:
            for attempt in (1, 2):
                async with http.post(url, data=data, headers=headers, allow_redirects=False) as resp:
                    status, text = resp.status, await resp.text(errors="replace")
                answer = _json(text)
                if status == 200 and answer.get("ok") is True:
                    return
                wait = _retry_after(answer)
                if status == 429 and wait is not None and wait <= RETRY_WAIT and attempt == 1:
                    await asyncio.sleep(wait)
                    continue
                refusal = _refusal(where, status, answer, text, token)
                raise NotifyError(f"telegram channel {name!r}: {refusal}")
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL aiohttp cannot take
        reason = (str(exc) or type(exc).__name__).replace(url, where).replace(token, "<token>")
        raise NotifyError(f"telegram channel {name!r}: cannot post to {where}: {reason}") from None


def _json(text: str) -> dict[str, Any]:
    try:
        answer = json.loads(text)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _retry_after(answer: dict[str, Any]) -> float | None:
    parameters = answer.get("parameters")
    wait = parameters.get("retry_after") if isinstance(parameters, dict) else None
    return float(wait) if isinstance(wait, int | float) and not isinstance(wait, bool) else None


def _refusal(where: str, status: int, answer: dict[str, Any], text: str, token: str) -> str:
    if "description" not in answer:  # not the Bot API speaking (a proxy? a wrong api_url?)
        shown = text[:200].strip().replace(token, "<token>")
        return f"{where} answered HTTP {status}" + (f": {shown}" if shown else "") + "; check api_url"
    code = answer.get("error_code", status)
    said = f"{where} refused the message: {str(answer['description'])[:300]} (error {code})"
    wait = _retry_after(answer)
    if wait is not None:
        return f"{said}; Telegram asks to wait {wait:g} s, the notifier tries again later"
    parameters = answer.get("parameters")
    moved = parameters.get("migrate_to_chat_id") if isinstance(parameters, dict) else None
    if moved is not None:
        return f"{said}; the group became a supergroup: set chat_id to {moved}"
    hint = HINTS.get(code) if isinstance(code, int) else None
    return f"{said}; {hint}" if hint else said
