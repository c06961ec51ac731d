"""What a notification says and who hears of it: a `Message` built from an event (a run ended,
an alert raised, a restore ended), read from the database, and the channels that should get it.

`for_run`, `for_alert` and `for_restore` turn an event into a `Message` (the job, its VMs, what
each moved or why it failed) and the channels that should hear of it; `shared.notify.channels`
delivers it.

Which channels: every channel of scope `all`, plus the channels the run's job names
(`options.notify.channels`); each takes the outcomes in its `on` unless the job sets its own
`options.notify.on`, and only messages at or above its `level` (info < warning < critical).
Outcomes: a run succeeded -> success; partial or cancelled -> warning; failed -> failure. An
alert of severity error or critical -> failure, warning or info -> warning. Levels: success ->
info, warning -> warning, failure -> critical, except alerts, whose level is their severity
(error counts as critical). Alerts a run's message already tells (a VM of the run failed) are
not sent again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.contracts import AlertRaised, RestoreDone, RunFinished
from shared.db.models import Job, Restore, RestorePointRow, Run, Task
from shared.model.units import human_bytes
from shared.notify.log import failing_channels
from shared.settings import ChannelSettings, NotificationSettings, Outcome
from shared.settings_notify import LEVELS, Level

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
OUTCOME_LEVEL: dict[Outcome, Level] = {"success": "info", "warning": "warning", "failure": "critical"}
ALERT_LEVEL: dict[str, Level] = {
    "critical": "critical",
    "error": "critical",
    "warning": "warning",
    "info": "info",
}
# Alerts about one VM of a run: the run's own message names the VM and the reason.
TOLD_BY_RUN = frozenset({"backup-failed", "restore_failed", "verify_failed"})
NOTIFICATION_FAILED = "notification_failed"


@dataclass(frozen=True)
class Message:
    event: str  # the event's message id: one message per event and channel
    kind: str  # "run.finished", "alert.raised" or "test"
    outcome: Outcome
    title: str
    lines: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)
    link: str | None = None
    severity: Level | None = None  # None: the outcome's level (OUTCOME_LEVEL)

    @property
    def level(self) -> Level:
        return self.severity or OUTCOME_LEVEL[self.outcome]

    @property
    def text(self) -> str:
        return "\n".join(self.lines + ((f"Details: {self.link}",) if self.link else ()))


# -- which channels -------------------------------------------------------------------------


def hears(channel: ChannelSettings, level: Level) -> bool:
    """Whether `channel` hears of a message of `level`: at or above the channel's own."""
    return LEVELS.index(level) >= LEVELS.index(channel.level)


def channels_for(
    settings: NotificationSettings, job: Job | None, outcome: Outcome, level: Level | None = None
) -> list[ChannelSettings]:
    """The channels a message of `outcome` (and `level`, by default the outcome's) goes to."""
    level = level or OUTCOME_LEVEL[outcome]
    notify = ((job.options or {}).get("notify") or {}) if job is not None else {}
    named = set(notify.get("channels") or ())
    job_on = notify.get("on")
    chosen = []
    for channel in settings.channels:
        if channel.scope == "jobs" and channel.name not in named:
            continue
        if outcome in (job_on or channel.on) and hears(channel, level):
            chosen.append(channel)
    return chosen


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
            vms.append(
                {
                    "vm": str(r.target.get("name", "")),
                    "vcenter": r.vcenter,
                    "state": r.state,
                    "error": r.error,
                }
            )
    else:
        tasks = select(Task).where(Task.run_id == run.id).order_by(Task.vm_name, Task.vcenter)
        for t in session.scalars(tasks):
            vms.append(
                {
                    "vm": t.vm_name,
                    "vcenter": t.vcenter,
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
    several = len({v.get("vcenter") for v in vms}) > 1  # VM names repeat across vCenters: say which
    for v in vms:
        vm = f"{v['vm']} on {v['vcenter']}" if several else v["vm"]
        if v["state"] == "succeeded" and not test:
            lines.append(
                f"- {vm}: {v['kind'] or 'backup'} ok, {human_bytes(v['bytes_read'])} read,"
                f" {human_bytes(v['bytes_stored'])} stored, restore point {v['restore_point']}"
            )
            lines.extend(f"    warning: {w}" for w in v.get("warnings") or [])
        else:
            lines.append(f"- {vm}: {v['state']}" + (f": {v['error']}" if v["error"] else ""))
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
    level = ALERT_LEVEL[event.severity]
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
        severity=level,
    )
    channels = channels_for(settings, job, outcome, level)
    if event.kind == NOTIFICATION_FAILED:  # not over the channels that are failing
        failing = failing_channels(session)
        channels = [c for c in channels if c.name not in failing]
    return message, channels


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


def test_message(now: datetime) -> Message:
    return Message(
        event=f"test:{now.isoformat()}",
        kind="test",
        outcome="success",
        title="[vbm] Test notification",
        lines=(f"vbm can reach this channel ({_when(now)}).",),
        data={"test": True},
    )
