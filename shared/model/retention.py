"""Which restore points a retention policy keeps, and why (Proxmox Backup Server's prune rules).

Rules, applied in this order: `keep_within_days` (everything younger), `keep_last` (the N newest),
then `keep_hourly`, `keep_daily`, `keep_weekly` (ISO weeks, Monday first), `keep_monthly`,
`keep_yearly`. Each period rule walks the points newest first and keeps the newest point of
each of its periods, until it has kept N; a point another rule already kept is skipped, and its
period counts as covered, not as one of the N; periods without points do not count. Points no
rule keeps are removed. Periods are in UTC.

Safety rules come first and always win: a pinned (protected) point, one that a running restore
or replication reads, and the newest point of the VM whose verification succeeded are kept. A
point not yet verified is treated like any other (verification runs right after the backup, so
the newest verified-good point is kept regardless). With no rule set, everything is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

MAX_KEEP = 100_000


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Bounds: a century, and more points than anyone keeps; larger values are typos, and
    # dates that far out overflow.
    keep_within_days: int | None = Field(default=None, ge=1, le=36500)
    keep_last: int | None = Field(default=None, ge=1, le=MAX_KEEP)
    keep_hourly: int | None = Field(default=None, ge=1, le=MAX_KEEP)
    keep_daily: int | None = Field(default=None, ge=1, le=MAX_KEEP)
    keep_weekly: int | None = Field(default=None, ge=1, le=MAX_KEEP)
    keep_monthly: int | None = Field(default=None, ge=1, le=MAX_KEEP)
    keep_yearly: int | None = Field(default=None, ge=1, le=100)

    def empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())


@dataclass(frozen=True)
class Point:
    id: str
    time: datetime
    verified_ok: bool = False
    pinned: bool = False
    in_use: bool = False


@dataclass(frozen=True)
class Decision:
    id: str
    time: datetime
    keep: bool
    reason: str


PERIODS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_hourly", "hourly", lambda t: t.strftime("%Y-%m-%dT%H")),
    ("keep_daily", "daily", lambda t: t.strftime("%Y-%m-%d")),
    ("keep_weekly", "weekly", lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2])),
    ("keep_monthly", "monthly", lambda t: t.strftime("%Y-%m")),
    ("keep_yearly", "yearly", lambda t: t.strftime("%Y")),
)


def plan(points: Sequence[Point], policy: Policy, now: datetime) -> list[Decision]:
    """A decision for every point, newest first."""
    ordered = sorted(points, key=lambda p: (p.time, p.id), reverse=True)
    marks: dict[str, tuple[bool, str]] = {}  # id -> (keep, reason); absent: undecided
    newest_ok = next((p for p in ordered if p.verified_ok), None)
    safe: dict[str, str] = {}
    for p in ordered:
        if p.pinned:
            safe[p.id] = "pinned"
        elif p.in_use:
            safe[p.id] = "in use by a running restore or replication"
        elif newest_ok is not None and p.id == newest_ok.id:
            safe[p.id] = "newest verified-good restore point"
    if policy.empty():
        return [Decision(p.id, p.time, True, safe.get(p.id, "no retention rule set")) for p in ordered]
    if policy.keep_within_days is not None:
        since = now - timedelta(days=policy.keep_within_days)
        for p in ordered:
            if p.time >= since and not p.pinned:
                marks[p.id] = (True, f"keep-within {policy.keep_within_days} days")
    # pinned points are PBS's "protected": no rule counts them or treats their period as covered
    ruled = [p for p in ordered if not p.pinned]
    if policy.keep_last is not None:
        _mark(ruled, marks, policy.keep_last, lambda p: p.id, "keep-last")
    for field, label, period in PERIODS:
        count = getattr(policy, field)
        if count is not None:
            _mark(ruled, marks, count, lambda p, f=period: f(p.time), f"keep-{label}")  # type: ignore[misc]
    out = []
    for p in ordered:
        keep, reason = marks.get(p.id, (False, "no rule keeps it"))
        if p.id in safe and not keep:
            keep, reason = True, safe[p.id]
        out.append(Decision(p.id, p.time, keep, reason))
    return out


def _mark(
    ordered: Sequence[Point],
    marks: dict[str, tuple[bool, str]],
    count: int,
    period: Callable[[Point], str],
    label: str,
) -> None:
    """One rule, as PBS's prune applies it: the newest point of each period not yet covered is
    kept until `count` periods are; older points of a period this rule kept are removed (so a
    later, coarser rule cannot keep them); points earlier rules decided are left alone."""
    covered = {period(p) for p in ordered if marks.get(p.id, (False, ""))[0]}
    kept: set[str] = set()
    for p in ordered:
        if p.id in marks:
            continue
        key = period(p)
        if key in covered:
            continue
        if key in kept:
            marks[p.id] = (False, f"{label}: a newer point of {key} is kept")
            continue
        if len(kept) >= count:
            break
        kept.add(key)
        marks[p.id] = (True, "keep-last" if label == "keep-last" else f"{label} ({key})")


def expiries(
    points: Sequence[Point], policy: Policy, now: datetime, future: Sequence[datetime]
) -> dict[str, datetime | None]:
    """When each point is expected to go: retention applied after each future backup in
    `future` (assumed to succeed and verify), removed points staying removed. None: not within
    the horizon `future` covers (or never: pinned, or no rule set)."""
    current = list(points)
    gone: dict[str, datetime | None] = {p.id: None for p in points}
    if policy.empty():
        return gone
    for n, when in enumerate(future):
        current.append(Point(f"\0future-{n}", when, verified_ok=True))
        keep = {d.id for d in plan(current, policy, when) if d.keep}
        for p in current:
            if p.id not in keep and p.id in gone and gone[p.id] is None:
                gone[p.id] = when
        current = [p for p in current if p.id in keep]
    return gone
