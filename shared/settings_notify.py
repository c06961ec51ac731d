"""The notification sections of the settings (`shared.settings.Settings`): the SMTP server, the
channels and their levels. Import them from `shared.settings`, which re-exports every one."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Outcome = Literal["success", "warning", "failure"]


class SMTPSettings(BaseModel):
    """The mail server email channels send through (the password is never logged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="", description="Empty: email channels cannot send")
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (587), tls (implicit, 465) or none (a local relay)"
    )
    username: str = ""
    password: SecretStr = SecretStr("")
    sender: str = Field(default="vbm@localhost", description="The From address")
    ca_file: str | None = Field(default=None, description="PEM of the server's CA; default: the system's")


ChannelType = Literal["email", "slack", "teams", "webhook", "telegram", "sendmail"]
Level = Literal["info", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("info", "warning", "critical")  # lowest first
TELEGRAM_API = "https://api.telegram.org"
SENDMAIL = "/usr/sbin/sendmail"


class ChannelSettings(BaseModel):
    """Where people hear about runs and alerts: an email list (through SMTP or the local sendmail),
    Slack, Teams, Telegram or any HTTP endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # secrets

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: ChannelType
    to: tuple[str, ...] = Field(default=(), description="email, sendmail: the recipients")
    url: SecretStr = Field(default=SecretStr(""), description="slack, teams, webhook: the URL to POST to")
    secret: SecretStr = Field(
        default=SecretStr(""), description="webhook: HMAC-SHA256 key for the X-VBM-Signature header"
    )
    token: SecretStr = Field(default=SecretStr(""), description="telegram: the bot's token (from @BotFather)")
    chat_id: str = Field(
        default="", max_length=128, description="telegram: the chat to post to (a number, or @channelname)"
    )
    api_url: str = Field(
        default=TELEGRAM_API, description="telegram: the Bot API server (a self-hosted one, or a test's)"
    )
    sendmail: str = Field(default=SENDMAIL, description="sendmail: the sendmail program (absolute path)")
    on: tuple[Outcome, ...] = Field(
        default=("failure", "warning"), min_length=1, description="Which outcomes this channel hears of"
    )
    level: Level = Field(
        default="info",
        description="The lowest level this channel hears of (info < warning < critical), besides `on`",
    )
    scope: Literal["all", "jobs"] = Field(
        default="all", description="all: every job and alert; jobs: only jobs that name it (options.notify)"
    )

    @model_validator(mode="after")
    def _complete(self) -> ChannelSettings:
        where = f"notification channel {self.name!r}"
        if self.type in ("email", "sendmail"):
            if not self.to:
                article = "an" if self.type == "email" else "a"
                raise ValueError(f"{where}: {article} {self.type} channel needs `to` (addresses)")
            bad = [a for a in self.to if "@" not in a or a.startswith("-") or not a.isprintable() or " " in a]
            if bad:
                raise ValueError(f"{where}: not an email address: {', '.join(bad)}")
            absolute = self.sendmail.startswith("/") and self.sendmail.isprintable()
            if self.type == "sendmail" and not absolute:
                raise ValueError(f"{where}: `sendmail` must be an absolute path, e.g. {SENDMAIL}")
        elif self.type == "telegram":
            if not self.token.get_secret_value():
                raise ValueError(f"{where}: a telegram channel needs `token` (the bot's, from @BotFather)")
            if not re.fullmatch(r"[0-9]+:[A-Za-z0-9_-]+", self.token.get_secret_value()):
                raise ValueError(f"{where}: `token` is not a bot token (digits, a colon, then letters)")
            if not re.fullmatch(r"-?[0-9]+|@[A-Za-z][A-Za-z0-9_]{3,}", self.chat_id):
                raise ValueError(
                    f"{where}: a telegram channel needs `chat_id`: a number (e.g. -1001234567890)"
                    " or @channelname"
                )
            if not (self.api_url.startswith(("http://", "https://")) and self.api_url.isprintable()):
                raise ValueError(f"{where}: `api_url` must start with https:// (or http://)")
        else:
            url = self.url.get_secret_value()
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{where}: a {self.type} channel needs `url` (http:// or https://)")
        return self


class NotificationSettings(BaseModel):
    """Channels that are told when runs end and alerts are raised (notifier service)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    smtp: SMTPSettings = SMTPSettings()
    channels: tuple[ChannelSettings, ...] = ()
    timeout: float = Field(default=15, gt=0, le=300, description="Seconds one delivery may take")
    retry: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        default=(10, 60, 300, 900, 1800, 3600),
        min_length=1,
        max_length=20,
        description="Seconds before each retry of a failed delivery; then it is given up (an alert)",
    )
    public_url: str = Field(
        default="", description="The gateway's address as people reach it, for links in messages"
    )

    @model_validator(mode="after")
    def _unique(self) -> NotificationSettings:
        names = [c.name for c in self.channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"notifications.channels: names must be unique, repeated: {', '.join(duplicates)}"
            )
        if any(c.type == "email" for c in self.channels) and not self.smtp.host:
            raise ValueError(
                "notifications: an email channel is configured but notifications.smtp.host is not"
            )
        return self

    def channel(self, name: str) -> ChannelSettings | None:
        return next((c for c in self.channels if c.name == name), None)
