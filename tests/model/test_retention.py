"""Retention as Proxmox Backup Server's prune decides it: rule order, periods, covered periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.model.retention import Point, Policy, plan


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def kept(points: list[Point], now: str = "2026-01-01T00:00", **rules: int) -> list[str]:
    return [d.id for d in plan(points, Policy(**rules), at(now)) if d.keep]


def pts(*times: str) -> list[Point]:
    return [Point(t, at(t)) for t in times]


def test_no_rule_keeps_everything() -> None:
    points = pts("2025-01-01T10:00", "2025-01-02T10:00")
    assert kept(points) == ["2025-01-02T10:00", "2025-01-01T10:00"]


def test_keep_last() -> None:
    points = pts(*(f"2025-03-0{d}T10:00" for d in range(1, 6)))
    assert kept(points, keep_last=3) == ["2025-03-05T10:00", "2025-03-04T10:00", "2025-03-03T10:00"]


def test_keep_daily_keeps_the_newest_of_each_day_and_days_without_backups_do_not_count() -> None:
    points = pts(
        "2025-03-05T22:00", "2025-03-05T12:00", "2025-03-05T02:00",
        "2025-03-03T22:00", "2025-03-03T12:00",  # no backup on the 4th
        "2025-03-02T22:00",
    )  # fmt: skip
    assert kept(points, keep_daily=2) == ["2025-03-05T22:00", "2025-03-03T22:00"]


def test_a_later_rule_only_considers_older_backups() -> None:
    points = pts("2025-03-05T22:00", "2025-03-05T12:00", "2025-03-04T22:00", "2025-03-03T22:00")
    # keep-last takes the newest; its day is covered, so keep-daily's 2 go to the 4th and the 3rd
    assert kept(points, keep_last=1, keep_daily=2) == [
        "2025-03-05T22:00",
        "2025-03-04T22:00",
        "2025-03-03T22:00",
    ]


def test_iso_weeks_at_the_end_of_the_year() -> None:
    # Mon 2024-12-30 and Thu 2025-01-02 are both in ISO week 2025-W01; Sun 2024-12-29 is 2024-W52
    points = pts("2025-01-02T10:00", "2024-12-30T10:00", "2024-12-29T10:00", "2024-12-22T10:00")
    assert kept(points, keep_weekly=2) == ["2025-01-02T10:00", "2024-12-29T10:00"]


def test_a_point_a_rule_removed_is_not_kept_by_a_coarser_rule() -> None:
    # Mon 2025-09-29 and Wed 2025-10-01 share ISO week 40 but not the month: keep-weekly keeps
    # October 1st and removes September 29th, so keep-monthly takes September 15th for September
    points = pts("2025-10-01T10:00", "2025-09-29T10:00", "2025-09-15T10:00", "2025-08-20T10:00")
    assert kept(points, keep_weekly=1, keep_monthly=2) == [
        "2025-10-01T10:00",
        "2025-09-15T10:00",
        "2025-08-20T10:00",
    ]
    why = {
        d.id: d.reason for d in plan(points, Policy(keep_weekly=1, keep_monthly=2), at("2026-01-01T00:00"))
    }
    assert why["2025-09-29T10:00"].startswith("keep-weekly: a newer point of 2025-W40 is kept")
    assert (
        why["2025-09-15T10:00"] == "keep-monthly (2025-09)"
        and why["2025-08-20T10:00"] == "keep-monthly (2025-08)"
    )


def test_gfs_over_a_year_of_daily_backups() -> None:
    start = at("2025-01-01T02:00")
    points = [Point(f"p{i}", start + timedelta(days=i)) for i in range(400)]
    now = start + timedelta(days=399, hours=1)
    decisions = plan(points, Policy(keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=2), now)
    keep = [d for d in decisions if d.keep]
    assert [d.id for d in keep[:7]] == [f"p{i}" for i in range(399, 392, -1)]  # the last 7 days
    assert sum(d.reason.startswith("keep-weekly") for d in keep) == 4
    assert sum(d.reason.startswith("keep-monthly") for d in keep) == 6
    # 2026 and 2025 both hold points kept by finer rules: keep-yearly finds no uncovered year
    assert sum(d.reason.startswith("keep-yearly") for d in keep) == 0
    assert len(keep) == 17
    months = [d.time.strftime("%Y-%m") for d in keep if d.reason.startswith("keep-monthly")]
    assert months == ["2025-12", "2025-11", "2025-10", "2025-09", "2025-08", "2025-07"]


def test_keep_within_days() -> None:
    points = pts("2025-12-31T10:00", "2025-12-28T10:00", "2025-12-20T10:00")
    assert kept(points, now="2026-01-01T00:00", keep_within_days=5) == [
        "2025-12-31T10:00",
        "2025-12-28T10:00",
    ]


def test_safety_rules_always_win() -> None:
    points = [
        Point("new", at("2025-03-05T10:00"), verified_ok=False),
        Point("good", at("2025-03-04T10:00"), verified_ok=True),
        Point("pinned", at("2025-01-01T10:00"), pinned=True),
        Point("reading", at("2024-06-01T10:00"), in_use=True),
        Point("old", at("2024-01-01T10:00"), verified_ok=True),
    ]
    decisions = {d.id: d for d in plan(points, Policy(keep_last=1), at("2026-01-01T00:00"))}
    assert decisions["new"].keep and decisions["new"].reason == "keep-last"
    assert decisions["good"].keep and decisions["good"].reason == "newest verified-good restore point"
    assert decisions["pinned"].keep and decisions["reading"].keep
    assert not decisions["old"].keep


def test_expected_expiry_if_backups_go_on() -> None:
    from shared.model.retention import expiries

    start = at("2025-03-01T02:00")
    points = [Point(f"d{i}", start + timedelta(days=i), verified_ok=True) for i in range(10)]
    points.append(Point("pinned", start - timedelta(days=30), pinned=True))
    now = start + timedelta(days=9, hours=1)
    future = [start + timedelta(days=10 + i) for i in range(30)]
    when = expiries(points, Policy(keep_last=3), now, future)
    # keep-last 3 keeps d9, d8, d7 today; each later backup lets the oldest of them go
    assert when["d7"] == future[0] and when["d8"] == future[1] and when["d9"] == future[2]
    assert when["pinned"] is None
    assert expiries(points, Policy(), now, future)["d9"] is None  # no rule: nothing expires


# The cases of Proxmox Backup Server's own prune tests (its tests/prune.rs), as data: the
# snapshots, the options, and which snapshots PBS keeps (K) or removes (R).
ELSA_HOURS = ["2019-11-15T09:39:15", "2019-11-15T10:49:15", "2019-11-15T10:59:15",
              "2019-11-15T11:39:15", "2019-11-15T11:49:15", "2019-11-15T11:59:15"]  # fmt: skip
ELSA_DAYS = ["2018-11-15T11:59:15", "2019-11-15T11:59:15", "2019-11-21T11:59:15", "2019-11-22T11:59:15",
             "2019-11-29T11:59:15", "2019-12-01T11:59:15", "2019-12-02T11:59:15", "2019-12-03T11:59:15",
             "2019-12-04T11:59:15"]  # fmt: skip
ELSA_WEEK = ["2019-12-02T11:59:15", "2019-12-03T11:59:15", "2019-12-04T11:59:15", "2019-12-04T12:59:15"]
THREE = ["2019-12-02T11:59:15", "2019-12-03T11:59:15", "2019-12-04T11:59:15"]

PBS_CASES = [
    (ELSA_HOURS, {"keep_hourly": 3}, "R",
     ["2019-11-15T10:49:15", "2019-11-15T11:39:15", "2019-11-15T11:49:15"]),
    (ELSA_HOURS, {"keep_hourly": 2}, "K", ["2019-11-15T10:59:15", "2019-11-15T11:59:15"]),
    (ELSA_DAYS, {"keep_daily": 1}, "K", ["2019-12-04T11:59:15"]),
    (ELSA_DAYS, {"keep_last": 1, "keep_daily": 1}, "K", ["2019-12-03T11:59:15", "2019-12-04T11:59:15"]),
    (ELSA_DAYS, {"keep_daily": 1, "keep_weekly": 1}, "K", ["2019-12-01T11:59:15", "2019-12-04T11:59:15"]),
    (ELSA_DAYS, {"keep_daily": 1, "keep_weekly": 1, "keep_monthly": 1}, "K",
     ["2019-11-22T11:59:15", "2019-12-01T11:59:15", "2019-12-04T11:59:15"]),
    (ELSA_DAYS, {"keep_monthly": 1, "keep_yearly": 1}, "K", ["2018-11-15T11:59:15", "2019-12-04T11:59:15"]),
    (ELSA_WEEK, {"keep_last": 4}, "R", []),
    (ELSA_WEEK, {"keep_last": 3}, "R", ["2019-12-02T11:59:15"]),
    (ELSA_WEEK, {"keep_last": 2}, "R", ["2019-12-02T11:59:15", "2019-12-03T11:59:15"]),
    (ELSA_WEEK, {"keep_last": 1}, "R", THREE),
    (ELSA_WEEK, {"keep_last": 2, "keep_daily": 2}, "R", []),
    (ELSA_WEEK, {"keep_daily": 3}, "R", ["2019-12-04T11:59:15"]),
    (ELSA_WEEK, {"keep_daily": 2}, "R", ["2019-12-02T11:59:15", "2019-12-04T11:59:15"]),
    (ELSA_WEEK, {"keep_weekly": 5}, "R", THREE),
    (ELSA_WEEK, {"keep_daily": 1, "keep_weekly": 5}, "R",
     THREE),
    (ELSA_WEEK, {"keep_monthly": 6}, "R", THREE),
    (ELSA_WEEK, {"keep_yearly": 7}, "R", THREE),
    (ELSA_WEEK, {"keep_weekly": 5, "keep_monthly": 6, "keep_yearly": 7}, "R",
     THREE),
]  # fmt: skip


@pytest.mark.parametrize(("times", "rules", "which", "expected"), PBS_CASES)
def test_the_cases_of_proxmox_backup_servers_prune_tests(
    times: list[str], rules: dict[str, int], which: str, expected: list[str]
) -> None:
    decisions = plan(pts(*times), Policy(**rules), at("2026-01-01T00:00"))
    picked = sorted(d.id for d in decisions if d.keep == (which == "K"))
    assert picked == sorted(expected)


def test_pinned_points_are_not_counted_by_any_rule() -> None:
    # as PBS's protected snapshots: keep-last 2 with the newest pinned keeps the next two as well
    points = [Point("d0", at("2025-03-05T10:00"), pinned=True), *pts("2025-03-04T10:00", "2025-03-03T10:00",
              "2025-03-02T10:00")]  # fmt: skip
    decisions = {d.id: d for d in plan(points, Policy(keep_last=2), at("2026-01-01T00:00"))}
    assert decisions["d0"].keep and decisions["d0"].reason == "pinned"
    assert [d for d, x in decisions.items() if x.keep] == ["d0", "2025-03-04T10:00", "2025-03-03T10:00"]
