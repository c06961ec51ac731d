"""Storage analytics (the web UI's Storage page and its CSV downloads): per repository, used
against free over time with the day a linear trend crosses the alert threshold, logical against
stored bytes over time; sizes per VM and per job, growth per VM, change rate per VM (changed
bytes per incremental) and what a prune would free now.

Every figure comes from the catalog: the daily usage samples the verifier takes
(shared/catalog/usage.py) and the restore points' sizes. Sizes per VM and per job are
`bytes_stored` as in `usage.view`; what a prune frees is the `bytes_stored` of the points the
prune preview removes (an upper bound: chunks a kept point shares stay)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog import prune
from shared.catalog.usage import locations
from shared.clock import aware
from shared.db.models import RestorePointRow
from shared.db.usage import UsageSample
from shared.settings import Settings

TOP = 10  # VMs in the growth chart
CHARTS = ("usage", "reduction", "vms", "jobs", "growth", "change", "prune")


def crossing(points: list[tuple[date, int, int]], percent: float, today: date) -> dict[str, Any]:
    """When a least-squares line through (day, used) reaches `percent` of the latest total:
    `state` is "day" (with `day` and `per_day`), "above" (the latest sample is there already), "flat" (not
    rising), "far" (not within a year of `today`) or "few" (fewer than two days sampled)."""
    if not points:
        return {"state": "few", "day": None}
    first, latest_used, latest_total = points[0][0], points[-1][1], points[-1][2]
    limit = latest_total * percent / 100.0
    if latest_used >= limit:
        return {"state": "above", "day": None}
    if len(points) < 2:
        return {"state": "few", "day": None}
    xs = [float((d - first).days) for d, _, _ in points]
    ys = [float(u) for _, u, _ in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread
    if slope <= 0 or slope * 365 < latest_total * 1e-6:  # less than a millionth a year: flat
        return {"state": "flat", "day": None}
    x = (limit - (my - slope * mx)) / slope
    day = max(first + timedelta(days=math.ceil(round(x, 6))), points[-1][0] + timedelta(days=1))
    if day > today + timedelta(days=365):
        return {"state": "far", "day": None}
    return {"state": "day", "day": day.isoformat(), "per_day": round(slope)}


def repository(session: Session, location: str, percent: float, today: date, days: int) -> dict[str, Any]:
    """One repository's samples of the last `days` days (oldest first) and its trend; "unsized"
    when its storage reports no total (object storage)."""
    since = today - timedelta(days=days - 1)
    query = (
        select(UsageSample)
        .where(UsageSample.repository == location, UsageSample.day >= since)
        .order_by(UsageSample.day)
    )
    rows = []
    fit: list[tuple[date, int, int]] = []
    for s in session.scalars(query):
        used = s.total - s.free if s.total is not None and s.free is not None else None
        if used is not None and s.total:
            fit.append((s.day, used, s.total))
        rows.append({
            "day": s.day.isoformat(), "total": s.total, "free": s.free, "used": used,
            "percent": round(100.0 * used / s.total, 1) if used is not None and s.total else None,
            "stored": s.stored, "logical": s.logical,
            "reduction": round(s.logical / s.stored, 2) if s.stored else None,
            "dedup": _ratio(s.referenced_bytes, s.unique_bytes),
            "compression": _ratio(s.unique_bytes, s.stored),
        })  # fmt: skip
    return {
        "repository": location, "samples": rows, "threshold": percent,
        "crossing": crossing(fit, percent, today) if fit or not rows else {"state": "unsized", "day": None},
    }  # fmt: skip


def storage(session: Session, settings: Settings, now: datetime, days: int = 90) -> dict[str, Any]:
    """Everything the Storage page shows, over the last `days` days."""
    percent = settings.verify.usage_alert_percent
    today = now.date()
    since = now - timedelta(days=days)
    per_vm: dict[str, int] = defaultdict(int)
    per_job: dict[str, int] = defaultdict(int)
    growth: dict[str, int] = defaultdict(int)
    changed: dict[str, list[int]] = defaultdict(list)
    for r in session.scalars(select(RestorePointRow)):
        per_vm[r.vm_name] += r.bytes_stored
        per_job[r.job_id or "-"] += r.bytes_stored
        if aware(r.finished_at) >= since:
            growth[r.vm_name] += r.bytes_stored
        if r.kind == "incremental":
            changed[r.vm_name].append(r.bytes_read)
    freed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row, decision, _ in prune.preview(session, settings, now):
        if not decision.keep:
            freed[row.repository][0] += 1
            freed[row.repository][1] += row.bytes_stored
    return {
        "days": days,
        "threshold": percent,
        "repositories": [repository(session, loc, percent, today, days) for loc in locations(session)],
        "vms": [{"name": k, "bytes": v} for k, v in sorted(per_vm.items(), key=lambda kv: (-kv[1], kv[0]))],
        "jobs": [{"name": k, "bytes": v} for k, v in sorted(per_job.items(), key=lambda kv: (-kv[1], kv[0]))],
        "growth": [
            {"name": k, "bytes": v} for k, v in sorted(growth.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
        ],
        "change": [
            {"name": k, "incrementals": len(v), "bytes": round(sum(v) / len(v))}
            for k, v in sorted(changed.items(), key=lambda kv: (-sum(kv[1]) / len(kv[1]), kv[0]))
        ],
        "prune": [{"repository": k, "points": n, "bytes": b} for k, (n, b) in sorted(freed.items())],
    }


def table(data: dict[str, Any], chart: str) -> list[list[Any]]:
    """One chart's numbers as rows, a header first (the CSV downloads)."""
    if chart == "usage":
        head = ["repository", "day", "total", "used", "free", "used_percent"]
        return [head] + [
            [r["repository"], s["day"], s["total"], s["used"], s["free"], s["percent"]]
            for r in data["repositories"]
            for s in r["samples"]
        ]
    if chart == "reduction":
        head = ["repository", "day", "logical", "stored", "reduction", "dedup_ratio", "compression_ratio"]
        return [head] + [
            [
                r["repository"],
                s["day"],
                s["logical"],
                s["stored"],
                s["reduction"],
                s["dedup"],
                s["compression"],
            ]
            for r in data["repositories"]
            for s in r["samples"]
        ]
    if chart in ("vms", "jobs", "growth"):
        return [["vm" if chart != "jobs" else "job", "bytes"]] + [
            [i["name"], i["bytes"]] for i in data[chart]
        ]
    if chart == "change":
        return [["vm", "incrementals", "changed_bytes_per_incremental"]] + [
            [i["name"], i["incrementals"], i["bytes"]] for i in data["change"]
        ]
    return [["repository", "restore_points", "bytes"]] + [
        [i["repository"], i["points"], i["bytes"]] for i in data["prune"]
    ]


def _ratio(a: int | None, b: int | None) -> float | None:
    return round(a / b, 2) if a and b else None
