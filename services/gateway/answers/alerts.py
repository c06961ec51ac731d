"""The answers of /api/v1/alerts, /api/v1/notifications and /api/v1/audit: what
shared/catalog/alerts.py (alert_view), shared/notify (channel_view, delivery_view, tested) and
shared/catalog/audit.py (view, page) make of their rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from services.gateway.apidoc import page_of


class Alert(BaseModel):
    """Something an operator should look at, once per cause (its key)."""

    id: str
    kind: str = Field(description="what happened, e.g. verify_failed, notification_failed")
    severity: Literal["info", "warning", "error", "critical"]
    message: str
    vm_name: str | None
    run_id: str | None
    created_at: datetime
    acknowledged_at: datetime | None = Field(description="null while the alert is open")


AlertPage = page_of("AlertPage", "alerts", Alert, "A page of alerts, newest first unless order=asc.")


class Channel(BaseModel):
    """A notification channel without its secrets: the endpoint is the host only."""

    name: str
    type: str = Field(description="email, sendmail, slack, teams, webhook or telegram")
    on: list[str] = Field(description="the outcomes it is told about")
    level: str = Field(description="the lowest level it is told about: info, warning or critical")
    scope: str
    to: list[str] = Field(description="an email or sendmail channel's recipients")
    endpoint: str = Field(description="the host it posts to, the SMTP server, or the sendmail program")
    signed: bool = Field(description="a webhook's body is signed (HMAC)")
    chat_id: str | None = Field(None, description="telegram: the chat")
    api_url: str | None = Field(None, description="telegram: the Bot API server")
    token: str | None = Field(None, description='telegram: the bot token, "set" or "not set"')
    sendmail: str | None = Field(None, description="sendmail: the program")


class Delivery(BaseModel):
    """One message to one channel, as the notifier last tried it."""

    id: str
    event: str = Field(description="the event told about, e.g. alert.raised:ALERT_ID")
    channel: str
    outcome: str
    title: str
    state: Literal["pending", "sent", "failed"]
    attempts: int
    error: str | None = Field(description="why the last attempt failed")
    created_at: datetime
    sent_at: datetime | None


Notifications = create_model(
    "Notifications",
    __base__=page_of("DeliveryPage", "deliveries", Delivery),
    __doc__="The channels and a page of the delivery log, newest first unless order=asc.",
    channels=(list[Channel], ...),
)


class TestWhich(BaseModel):
    """The body of POST /api/v1/notifications/test (it may be left out: every channel)."""

    channel: str | None = Field(None, description="the channel to try; none: every one")


class TriedChannel(BaseModel):
    channel: str
    ok: bool
    error: str | None


class Tried(BaseModel):
    """One result per channel tried; ok when every one was sent."""

    results: list[TriedChannel]
    ok: bool


class AuditRecord(BaseModel):
    """One request that changed something (or tried to), a link of the hash chain."""

    id: int
    at: datetime
    actor: str = Field(description="who: a user, a key, os:NAME, system:SERVICE, or - for nobody")
    source: str
    action: str
    target: str
    params: Any = Field(description="the query and the body, secrets masked")
    result: str = Field(description="ok, or the status and detail of the error")
    request_id: str
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    """A page of the audit log, newest first."""

    records: list[AuditRecord]
    total: int = Field(description="records that match the filters")
    next_cursor: int | None = Field(description="give it as cursor= for the next page; null at the end")
