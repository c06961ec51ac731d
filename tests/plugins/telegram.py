"""A local HTTP server shaped like Telegram's Bot API (api.telegram.org cannot be reached from
here; this is the one fake the brief allows for it).

It is a real aiohttp server on a free loopback port, in the test's own event loop, answering
`POST /bot<token>/sendMessage` as the Bot API does: the token in the path must be the bot's
(else 401 "Unauthorized"), the body JSON with `chat_id` and `text` (HTML parse mode checked for
the tags Telegram knows), the chat known (else 400 "Bad Request: chat not found") and not
blocking the bot (403 "Forbidden: bot was blocked by the user"). `throttle` lists the
`retry_after` seconds of the next 429 answers; `moved` maps a group's old id to its
supergroup's (400 with `migrate_to_chat_id`). `api_url` goes into a channel's `api_url`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp import web

from tests.plugins.procs import free_port

__all__ = ["BotApi", "Posted"]

TOKEN = "123456789:AAH-test-token_of_the-bot"
TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler"}


@dataclass(frozen=True)
class Posted:
    chat_id: str
    text: str
    body: dict[str, Any]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.bad: list[str] = []
        self.plain: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TAGS:
            self.bad.append(tag)

    def handle_data(self, data: str) -> None:
        self.plain.append(data)


@dataclass
class BotApi:
    port: int = field(default_factory=free_port)
    token: str = TOKEN
    chats: set[str] = field(default_factory=lambda: {"-1001234567890", "4242", "@vbm_alerts"})
    blocked: set[str] = field(default_factory=set)
    moved: dict[str, int] = field(default_factory=dict)
    throttle: list[int] = field(default_factory=list)
    posted: list[Posted] = field(default_factory=list)
    requests: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _refuse(status: int, description: str, **parameters: Any) -> web.Response:
        answer: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            answer["parameters"] = parameters
        return web.json_response(answer, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.match_info["token"] != self.token:
            return self._refuse(401, "Unauthorized")
        if request.match_info["method"] != "sendMessage":
            return self._refuse(404, "Not Found")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._refuse(400, "Bad Request: message text is empty")
        if self.throttle:
            wait = self.throttle.pop(0)
            return self._refuse(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        chat, text = str(body.get("chat_id", "")), str(body.get("text", ""))
        if chat in self.moved:
            return self._refuse(400, "Bad Request: group chat was upgraded to a supergroup chat",
                                migrate_to_chat_id=self.moved[chat])  # fmt: skip
        if chat not in self.chats:
            return self._refuse(400, "Bad Request: chat not found")
        if chat in self.blocked:
            return self._refuse(403, "Forbidden: bot was blocked by the user")
        parsed = _Tags()
        if body.get("parse_mode") == "HTML":
            parsed.feed(text)
            if parsed.bad:
                return self._refuse(
                    400, f'Bad Request: can\'t parse entities: Unsupported start tag "{parsed.bad[0]}"'
                )
        plain = "".join(parsed.plain) if body.get("parse_mode") == "HTML" else text
        if not plain.strip():
            return self._refuse(400, "Bad Request: message text is empty")
        if len(plain) > 4096:
            return self._refuse(400, "Bad Request: message is too long")
        self.posted.append(Posted(chat, plain, body))
        result = {"message_id": len(self.posted), "chat": {"id": chat}, "date": 0, "text": plain}
        return web.json_response({"ok": True, "result": result})


@pytest.fixture
async def bot_api() -> AsyncIterator[BotApi]:
    api = BotApi()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", api.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", api.port).start()
    try:
        yield api
    finally:
        await runner.cleanup()
