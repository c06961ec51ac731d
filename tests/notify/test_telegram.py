"""Telegram channels against a local server shaped like the Bot API (tests/plugins/telegram.py):
the token in the path, the JSON body, the Bot API's refusals as errors, 429's retry_after."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.notify import channels as notify
from shared.notify.channels import NotifyError
from shared.notify.messages import Message
from shared.settings import NotificationSettings
from tests.plugins.procs import free_port
from tests.plugins.telegram import TOKEN, BotApi

MESSAGE_TIME = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)
MESSAGE = Message(
    event="run.finished:run-1",
    kind="run.finished",
    outcome="failure",
    title="[vbm] Backup FAILED: nightly <prod> & co (1 of 2 VMs ok)",
    lines=("Job: nightly", "", "- db: failed: snapshot refused (<b>quiesce</b> & timeout)"),
    link="http://vbm.example:8420/api/v1/runs/run-1",
)


def telegram(api: BotApi, **fields: Any) -> NotificationSettings:
    channel = {"name": "tg", "type": "telegram", "token": TOKEN, "chat_id": "-1001234567890",
               "api_url": api.api_url} | fields  # fmt: skip
    return NotificationSettings.model_validate({"channels": [channel], "timeout": 5})


async def send(s: NotificationSettings, message: Message = MESSAGE) -> None:
    await notify.send(s.channels[0], message, s)


async def test_a_message_reaches_the_chat_as_html_with_its_title_bold(bot_api: BotApi) -> None:
    await send(telegram(bot_api))
    [got] = bot_api.posted
    assert got.chat_id == "-1001234567890"
    assert got.body["parse_mode"] == "HTML" and got.body["disable_web_page_preview"] is True
    assert got.body["text"].startswith("<b>[vbm] Backup FAILED: nightly &lt;prod&gt; &amp; co")
    assert got.text.startswith(MESSAGE.title) and "(<b>quiesce</b> & timeout)" in got.text  # escaped: plain
    assert got.text.endswith("Details: http://vbm.example:8420/api/v1/runs/run-1")

    long = Message(event="e", kind="test", outcome="success", title="t", lines=("x" * 9000,))
    await send(telegram(bot_api, chat_id="@vbm_alerts"), long)
    assert (
        len(bot_api.posted[-1].text) <= 4096 and "cut: the whole message is in vbm" in bot_api.posted[-1].text
    )


async def test_the_bot_apis_refusals_are_the_error_and_never_show_the_token(bot_api: BotApi) -> None:
    bot_api.blocked = {"4242"}
    bot_api.moved = {"-4711": -1009876543210}
    other = "987654321:BBthe-wrong-token"
    cases = [
        ({"chat_id": "-100999"}, r"refused the message: Bad Request: chat not found \(error 400\); check the"
                                 r" channel's chat_id"),
        ({"chat_id": "4242"}, r"Forbidden: bot was blocked by the user \(error 403\); the bot cannot write"),
        ({"token": other}, r"Unauthorized \(error 401\); check the channel's bot token"),
        ({"chat_id": "-4711"}, r"upgraded to a supergroup chat \(error 400\); the group became a supergroup:"
                               r" set chat_id to -1009876543210"),
        ({"api_url": bot_api.api_url + "/nothing"}, r"Not Found \(error 404\)|answered HTTP 404"),
    ]  # fmt: skip
    for fields, expected in cases:
        with pytest.raises(
            NotifyError, match=r"telegram channel 'tg': 127\.0\.0\.1:\d+ .*" + expected
        ) as err:
            await send(telegram(bot_api, **fields))
        assert TOKEN not in str(err.value) and other not in str(err.value)
        assert "AAH-test" not in str(err.value) and "/bot" not in str(err.value)
    assert bot_api.posted == []

    down = telegram(bot_api, api_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(NotifyError, match=r"telegram channel 'tg': cannot post to 127\.0\.0\.1:\d+") as err:
        await send(down)
    assert TOKEN not in str(err.value)


async def test_a_short_retry_after_is_waited_a_long_one_reported(bot_api: BotApi) -> None:
    bot_api.throttle = [1]
    started = time.monotonic()
    await send(telegram(bot_api))
    assert time.monotonic() - started >= 1.0 and len(bot_api.posted) == 1 and bot_api.requests == 2
    bot_api.throttle = [120]
    asks = r"Too Many Requests: retry after 120 \(error 429\); Telegram asks to wait 120 s, the notifier"
    with pytest.raises(NotifyError, match=asks):
        await send(telegram(bot_api))
    assert bot_api.requests == 3


async def test_a_test_message_reports_delivered_or_the_reason(bot_api: BotApi) -> None:
    s = telegram(bot_api)
    assert await notify.send_test(s, MESSAGE_TIME) == [{"channel": "tg", "ok": True, "error": None}]
    bot_api.blocked = {"-1001234567890"}
    [result] = await notify.send_test(s, MESSAGE_TIME)
    assert not result["ok"] and "Forbidden: bot was blocked by the user" in result["error"]


def test_bad_telegram_settings_say_what_to_fix_without_the_token() -> None:
    base = {"name": "tg", "type": "telegram", "token": TOKEN, "chat_id": "4242"}
    cases = [
        ({"token": ""}, "needs `token`"),
        ({"token": "not a token at all"}, "`token` is not a bot token"),
        ({"chat_id": ""}, "needs `chat_id`"),
        ({"chat_id": "general"}, "needs `chat_id`"),
        ({"api_url": "api.telegram.org"}, "`api_url` must start with https://"),
    ]
    for fields, expected in cases:
        with pytest.raises(ValidationError, match=expected) as err:
            NotificationSettings.model_validate({"channels": [base | fields]})
        assert "AAH-test" not in str(err.value)
    view = notify.channel_view(NotificationSettings.model_validate({"channels": [base]}).channels[0],
                               NotificationSettings())  # fmt: skip
    assert view["endpoint"] == "api.telegram.org" and view["token"] == "set" and TOKEN not in str(view)
