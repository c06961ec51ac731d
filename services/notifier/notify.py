"""The notifier's channels: each ended run and each alert told to the channels that want it.

One `Notification` row per (event, channel) is the delivery log and the idempotency key: a
redelivered event skips the channels it has reached. A channel that fails makes the handler raise
`Retryable` (the bus redelivers with backoff; only the failed channels are tried again); after the
last delivery the failure is given up on with a `notification_failed` alert, which is told over
the channels that still work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from services.notifier.handlers import Deps
from shared.catalog import channels
from shared.catalog.alerts import raise_alert
from shared.contracts import AlertRaised, Event, RestoreDone, RunFinished
from shared.db.models import Notification
from shared.notify import channels as notify
from shared.notify import messages
from shared.notify.log import notification_id
from shared.notify.messages import Message
from shared.observe.metrics import NOTIFICATIONS
from shared.observe.oncommit import after_commit
from shared.runtime.bus import Delivery, Retryable
from shared.runtime.service import Context
from shared.settings import ChannelSettings, NotificationSettings

log = logging.getLogger(__name__)

# Older news is not sent: a notifier that starts on a stream holding days of events (a first start
# after an upgrade, a long outage) does not flood people; the alerts stay listed in the API.
STALE_AFTER = timedelta(hours=24)

Built = tuple[Message, list[ChannelSettings]] | None


def effective(ctx: Context) -> NotificationSettings:
    """The channels and SMTP server in effect: configured ones and those stored through the API
    (read afresh: a channel added or changed is used from the next event on)."""
    return channels.notifications(ctx.settings, ctx.sessions)


def _stale(event: Event, deps: Deps) -> bool:
    if event.occurred_at >= deps.ctx.clock() - STALE_AFTER:
        return False
    log.info(
        "not sending %s: it happened at %s, more than %s ago", event.msg_id(), event.occurred_at, STALE_AFTER
    )
    return True


async def on_run_finished(event: RunFinished, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    if _stale(event, deps):
        return []
    settings = effective(deps.ctx)
    return await _deliver(deps, delivery, lambda s: messages.for_run(s, event, settings), quiet=False)


async def on_restore_done(event: RestoreDone, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    if _stale(event, deps):
        return []
    settings = effective(deps.ctx)
    return await _deliver(deps, delivery, lambda s: messages.for_restore(s, event, settings), quiet=False)


async def on_alert_raised(event: AlertRaised, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    if _stale(event, deps):
        return []
    settings = effective(deps.ctx)
    quiet = event.kind == messages.NOTIFICATION_FAILED  # its own failure raises nothing more
    return await _deliver(deps, delivery, lambda s: messages.for_alert(s, event, settings), quiet=quiet)


async def _deliver(
    deps: Deps, delivery: Delivery, build: Callable[[Session], Built], *, quiet: bool
) -> Sequence[Event]:
    ctx = deps.ctx
    settings = effective(ctx)
    if not settings.channels:
        return []
    with ctx.sessions() as s:
        built = build(s)
    if built is None:
        return []
    message, channels = built
    failed: list[str] = []
    for channel in channels:
        nid = notification_id(message.event, channel.name)
        with ctx.sessions() as s:
            row = s.get(Notification, nid)
            if row is not None and row.state == "sent":
                continue
        error: str | None = None
        try:
            await notify.send(channel, message, settings)
        except notify.NotifyError as exc:
            error = str(exc)
            failed.append(error)
            log.warning("notification %s not delivered (attempt %d): %s", nid, delivery.attempt, error)
        _record(ctx, nid, message, channel.name, error)
    if not failed:
        return []
    if not delivery.last_attempt:
        raise Retryable("; ".join(failed))
    if not quiet:
        with ctx.sessions.begin() as s:
            raise_alert(
                s,
                key=f"notification-failed:{message.event}",
                kind=messages.NOTIFICATION_FAILED,
                severity="error",
                now=ctx.clock(),
                message=f"{message.title!r} could not be delivered after {delivery.attempt} attempts: "
                + "; ".join(failed),
            )
        ctx.relay.kick()
    return []


def _record(ctx: Context, nid: str, message: Message, channel: str, error: str | None) -> None:
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        row = s.get(Notification, nid)
        if row is None:
            row = Notification(
                id=nid,
                event=message.event,
                channel=channel,
                outcome=message.outcome,
                title=message.title[:2000],
                state="pending",
                attempts=0,
                created_at=now,
            )
            s.add(row)
        row.attempts += 1
        row.state = "failed" if error else "sent"
        after_commit(s, NOTIFICATIONS.labels(channel=channel, outcome=row.state).inc)
        row.error = error[:4000] if error else None
        row.sent_at = None if error else now
