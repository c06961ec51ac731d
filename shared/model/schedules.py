"""Job schedules: cron, interval and presets, and the slots they fire at.

A schedule is data (stored with the job, sent over the API):

    {"kind": "cron", "cron": "0 2 * * *", "timezone": "Europe/Berlin"}
    {"kind": "interval", "every_minutes": 240}
    {"kind": "preset", "preset": "weekly", "at": "02:30", "timezone": "UTC"}

Presets follow the user's earlier tool: daily, weekly (Sundays), monthly (the 1st), quarterly
(1 Jan/Apr/Jul/Oct), semi-annual (1 Jan/Jul), yearly (1 Jan). A *slot* is the instant a schedule
fires; the run of a slot has an id derived from the job and the slot, so a slot can run only
once however often it is triggered.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Preset = Literal["daily", "weekly", "monthly", "quarterly", "semi-annual", "yearly"]

PRESET_CRON: dict[str, str] = {
    "daily": "{m} {h} * * *",
    "weekly": "{m} {h} * * sun",
    "monthly": "{m} {h} 1 * *",
    "quarterly": "{m} {h} 1 1,4,7,10 *",
    "semi-annual": "{m} {h} 1 1,7 *",
    "yearly": "{m} {h} 1 1 *",
}
INTERVAL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class NeverFires(ValueError):
    """A schedule has no next slot (e.g. cron `0 0 30 2 *`, which vbm refuses when it is given)."""


class Schedule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["cron", "interval", "preset"]
    cron: str | None = Field(default=None, description="Five-field crontab, for kind=cron")
    every_minutes: Annotated[int, Field(ge=1, le=366 * 24 * 60)] | None = None
    preset: Preset | None = None
    at: str = Field(default="02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as UTC)") from None
        return value

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Schedule:
        if self.kind == "cron":
            if not self.cron:
                raise ValueError("kind=cron needs `cron`, e.g. '0 2 * * *'")
            try:
                trigger = CronTrigger.from_crontab(self.cron, timezone=self.timezone)
            except ValueError as exc:
                raise ValueError(f"cron {self.cron!r} is not valid: {exc}") from None
            if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
                raise ValueError(f"cron {self.cron!r} never fires (no such date): it would never back up")
        elif self.kind == "interval" and not self.every_minutes:
            raise ValueError("kind=interval needs `every_minutes`")
        elif self.kind == "preset" and not self.preset:
            raise ValueError(f"kind=preset needs `preset`, one of {', '.join(PRESET_CRON)}")
        return self

    def trigger(self) -> BaseTrigger:
        if self.kind == "interval":
            assert self.every_minutes is not None
            return IntervalTrigger(
                minutes=self.every_minutes, start_date=INTERVAL_EPOCH, timezone=self.timezone
            )
        expr = self.cron
        if self.kind == "preset":
            assert self.preset is not None
            hour, minute = self.at.split(":")
            expr = PRESET_CRON[self.preset].format(h=int(hour), m=int(minute))
        assert expr is not None
        return CronTrigger.from_crontab(expr, timezone=self.timezone)

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after `after`; NeverFires when there is none."""
        trig = self.trigger()
        nxt: datetime | None = trig.get_next_fire_time(None, after + timedelta(microseconds=1))
        if nxt is None:
            raise NeverFires(f"schedule {self.describe()} has no slot after {after:%Y-%m-%d %H:%M}")
        return nxt.astimezone(UTC)

    def describe(self) -> str:
        if self.kind == "cron":
            return f"cron {self.cron!r}"
        if self.kind == "interval":
            return f"every {self.every_minutes} minutes"
        return f"{self.preset} at {self.at}"

    def last_slot(self, at_or_before: datetime, *, not_before: datetime) -> datetime | None:
        """The newest slot in [not_before, at_or_before], or None: what a restart must catch up."""
        slot = None
        cursor = not_before - timedelta(microseconds=1)
        while True:
            nxt = self.next_slot(cursor)
            if nxt > at_or_before:
                return slot
            slot, cursor = nxt, nxt


def run_id_for(job_id: str, slot: datetime | None, now: datetime, nonce: str = "") -> str:
    """Scheduled runs: `<job>-<slot>`; manual runs: `<job>-m<now>` plus a nonce if given."""
    if slot is not None:
        return f"{job_id}-{slot.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return f"{job_id}-m{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}{nonce}"
