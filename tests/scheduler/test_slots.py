"""Slots of every kind of schedule, in time zones and across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.model.schedules import Schedule
from shared.model.slots import is_slot, last_slot, newest_slot, next_slot


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def slots(raw: dict[str, Any], after: datetime, n: int) -> list[datetime]:
    schedule = Schedule.model_validate(raw)
    out = []
    for _ in range(n):
        after = next_slot(schedule, after)
        out.append(after)
    return out


# New York: EST (UTC-5) until 8 March 2026, EDT (UTC-4) until 1 November 2026.
PRESETS = {
    "weekly": (utc(2026, 2, 25), [utc(2026, 3, 1, 7, 30), utc(2026, 3, 8, 7, 30), utc(2026, 3, 15, 6, 30)]),
    "monthly": (utc(2026, 1, 20), [utc(2026, 2, 1, 7, 30), utc(2026, 3, 1, 7, 30), utc(2026, 4, 1, 6, 30)]),
    "quarterly": (
        utc(2026, 1, 2),
        [utc(2026, 4, 1, 6, 30), utc(2026, 7, 1, 6, 30), utc(2026, 10, 1, 6, 30), utc(2027, 1, 1, 7, 30)],
    ),
    "semi-annual": (
        utc(2026, 1, 2),
        [utc(2026, 7, 1, 6, 30), utc(2027, 1, 1, 7, 30), utc(2027, 7, 1, 6, 30)],
    ),
    "yearly": (utc(2026, 1, 2), [utc(2027, 1, 1, 7, 30), utc(2028, 1, 1, 7, 30)]),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_fire_at_local_time_across_dst(preset: str) -> None:
    raw = {"kind": "preset", "preset": preset, "at": "02:30", "timezone": "America/New_York"}
    after, expected = PRESETS[preset]
    assert slots(raw, after, len(expected)) == expected


def test_daily_when_clocks_go_forward_and_back() -> None:
    berlin = {"kind": "preset", "preset": "daily", "at": "02:30", "timezone": "Europe/Berlin"}
    # 29 March 2026: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist: it runs at 03:30.
    assert slots(berlin, utc(2026, 3, 27), 4) == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]
    # 25 October 2026: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice: it runs once.
    assert slots(berlin, utc(2026, 10, 23), 4) == [
        utc(2026, 10, 23, 0, 30),
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    schedule = Schedule.model_validate(berlin)
    assert not is_slot(schedule, utc(2026, 10, 25, 1, 30))
    assert newest_slot(schedule, utc(2026, 10, 25, 2), utc(2026, 10, 24)) == utc(2026, 10, 25, 0, 30)


def test_cron_in_a_time_zone() -> None:
    raw = {"kind": "cron", "cron": "15 2 * * mon-fri", "timezone": "Europe/Berlin"}
    # Friday 23 Oct, then Monday 26 Oct (CET again, so an hour later in UTC).
    assert slots(raw, utc(2026, 10, 23), 2) == [utc(2026, 10, 23, 0, 15), utc(2026, 10, 26, 1, 15)]
    # A fixed hour runs once when 02:15 repeats on 25 Oct (a Sunday here, so use every day).
    daily = {"kind": "cron", "cron": "15 2 * * *", "timezone": "Europe/Berlin"}
    assert slots(daily, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 0, 15), utc(2026, 10, 26, 1, 15)]


def test_cron_with_wildcard_hours_keeps_the_repeated_hour() -> None:
    raw = {"kind": "cron", "cron": "30 * * * *", "timezone": "Europe/Berlin"}
    assert slots(raw, utc(2026, 10, 25, 0), 3) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 1, 30),  # 02:30 CET
        utc(2026, 10, 25, 2, 30),
    ]


def test_interval_counts_absolute_time_from_a_fixed_epoch() -> None:
    raw = {"kind": "interval", "every_minutes": 90, "timezone": "Europe/Berlin"}
    got = slots(raw, utc(2026, 3, 29, 0, 0), 4)
    assert got == [utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 3), utc(2026, 3, 29, 4, 30), utc(2026, 3, 29, 6)]
    # Slots do not depend on when the question is asked.
    assert slots(raw, utc(2026, 3, 29, 2, 59), 1) == [utc(2026, 3, 29, 3)]


@pytest.mark.parametrize(
    ("raw", "days"),
    [
        ({"kind": "interval", "every_minutes": 1}, 3),
        ({"kind": "interval", "every_minutes": 7}, 3),
        ({"kind": "cron", "cron": "*/5 1-3 * * *", "timezone": "Europe/Berlin"}, 3),
        ({"kind": "preset", "preset": "weekly", "at": "23:59", "timezone": "Asia/Kolkata"}, 900),
        ({"kind": "preset", "preset": "yearly"}, 900),
    ],
)
def test_newest_slot_matches_a_plain_walk(raw: dict[str, Any], days: int) -> None:
    """The windowed search finds what walking every slot from the floor finds."""
    schedule = Schedule.model_validate(raw)
    now = utc(2026, 11, 26, 9, 7, 3)
    for floor in (now - timedelta(minutes=3), now - timedelta(hours=5), now - timedelta(days=days)):
        assert newest_slot(schedule, now, floor) == last_slot(schedule, now, not_before=floor)
    slot = newest_slot(schedule, now, now - timedelta(days=days))
    assert slot is not None and is_slot(schedule, slot) and slot <= now < next_slot(schedule, slot)
