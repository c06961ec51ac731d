"""Slot arithmetic on top of `shared.model.schedules.Schedule` (APScheduler triggers).

One correction to the triggers: when clocks go back, APScheduler's CronTrigger fires a fixed
wall-clock time twice (02:30 CEST and 02:30 CET both match "daily at 02:30"). Like cron, vbm runs
a schedule with fixed hours (every preset; a crontab without `*` in its hour field) once: the
second occurrence of a repeated wall-clock time is not a slot. Schedules with a wildcard hour
(`*/15 * * * *`) and intervals (counted in absolute time) keep every slot. A local time skipped
when clocks go forward runs at the first instant after the gap (02:30 -> 03:30 CEST), once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.model.schedules import Schedule

TICK = timedelta(microseconds=1)
# The newest slot is searched in growing windows before `now`, so a frequent schedule after a long
# outage costs a few dozen trigger steps instead of one per missed slot.
SEARCH_WINDOWS = (timedelta(hours=1), timedelta(days=2), timedelta(days=35), timedelta(days=400))


def fixed_hours(schedule: Schedule) -> bool:
    if schedule.kind == "preset":
        return True
    if schedule.kind == "cron" and schedule.cron:
        return "*" not in schedule.cron.split()[1]
    return False


def is_repeat(schedule: Schedule, slot: datetime) -> bool:
    """Whether `slot` is the second occurrence of a wall-clock time that was a slot already."""
    if not fixed_hours(schedule):
        return False
    local = slot.astimezone(ZoneInfo(schedule.timezone))
    if not local.fold:
        return False
    first = local.replace(fold=0).astimezone(UTC)
    return first < slot and schedule.next_slot(first - TICK) == first


def next_slot(schedule: Schedule, after: datetime) -> datetime:
    """The first slot strictly after `after`."""
    slot = schedule.next_slot(after)
    while is_repeat(schedule, slot):
        slot = schedule.next_slot(slot)
    return slot


def is_slot(schedule: Schedule, instant: datetime) -> bool:
    return next_slot(schedule, instant - TICK) == instant


def last_slot(schedule: Schedule, at_or_before: datetime, *, not_before: datetime) -> datetime | None:
    """The newest slot in `[not_before, at_or_before]`, or None."""
    slot = None
    cursor = not_before - TICK
    while (nxt := next_slot(schedule, cursor)) <= at_or_before:
        slot = cursor = nxt
    return slot


def newest_slot(schedule: Schedule, now: datetime, floor: datetime) -> datetime | None:
    """The newest slot in `[floor, now]`: what must run now (older missed slots coalesce into it)."""
    for window in SEARCH_WINDOWS:
        start = now - window
        if start <= floor:
            break
        slot = last_slot(schedule, now, not_before=start)
        if slot is not None:
            return slot
    return last_slot(schedule, now, not_before=floor)
