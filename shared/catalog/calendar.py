"""The backup calendar (roadmap 7.1): which VMs were backed up on which days, and what is planned.

Past days come from the catalog's runs and tasks, counted in SQL (GROUP BY day, status, and for
the week view and one day's panel GROUP BY day, VM, status), never a row per run into Python, so a
month of 500 VMs backed up daily answers as fast as a short list. A task's status is its state,
with `warning` for a task that succeeded with warnings (as `task_view`'s outcome says). The day of
a task is its run's creation day in UTC. Planned runs (grey) are the next slots of the enabled
jobs' schedules after now, counted as the scheduler counts them (shared/model/slots.py), as the
dashboard's next runs are (shared/catalog/overview.py).

Filters: a job (id or name), a vCenter, a VM (name), each exact."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared.db.models import Job, Run, Task
from shared.errors import Invalid
from shared.model.schedules import Schedule
from shared.model.slots import next_slot

# The statuses a cell counts, worst first (the order a VM's cell picks its one status by)
STATUSES = ("failed", "warning", "cancelled", "running", "queued", "succeeded", "planned")
FILTERS = ("job", "vcenter", "vm")
MAX_SLOTS = 800  # planned slots per job and period: an every-minute schedule stays bounded
_MONTH = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
_WEEK = re.compile(r"(\d{4})-W(\d{2})", re.ASCII)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


@dataclass(frozen=True)
class Period:
    kind: str  # "month" or "week"
    start: date
    end: date  # exclusive
    label: str
    key: str  # the query value: 2026-12 or 2026-W49
    prev: str
    next: str

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]


def _month(year: int, month: int) -> Period:
    start = date(year, month, 1)
    end = date(year + month // 12, month % 12 + 1, 1)
    prev = date(year - 1, 12, 1) if month == 1 else date(year, month - 1, 1)
    return Period("month", start, end, start.strftime("%B %Y"), f"{year:04d}-{month:02d}",
                  f"{prev.year:04d}-{prev.month:02d}", f"{end.year:04d}-{end.month:02d}")  # fmt: skip


def _week(year: int, week: int) -> Period:
    start = date.fromisocalendar(year, week, 1)
    end = start + timedelta(days=7)
    p, n = (start - timedelta(days=7)).isocalendar(), end.isocalendar()
    label = f"Week {week}, {year} ({start:%d %b} - {end - timedelta(days=1):%d %b %Y})"
    return Period("week", start, end, label, f"{year:04d}-W{week:02d}",
                  f"{p.year:04d}-W{p.week:02d}", f"{n.year:04d}-W{n.week:02d}")  # fmt: skip


def period(month: str | None, week: str | None, today: date) -> Period:
    """The month (YYYY-MM) or ISO week (YYYY-Www) asked for, this month without either;
    Invalid (a 422) for any other value or a year outside 1970-9998."""
    if month and week:
        raise Invalid("month", "give a month or a week, not both")
    if week:
        found = _WEEK.fullmatch(week)
        try:
            if found is None or not 1970 <= int(found[1]) <= 9998:
                raise ValueError(week)
            return _week(int(found[1]), int(found[2]))
        except ValueError:
            raise Invalid("week", "a week is YYYY-Www, e.g. 2026-W49 (years 1970-9998)") from None
    if month:
        found = _MONTH.fullmatch(month)
        if found is None or not 1970 <= int(found[1]) <= 9998 or not 1 <= int(found[2]) <= 12:
            raise Invalid("month", "a month is YYYY-MM, e.g. 2026-12 (years 1970-9998)")
        return _month(int(found[1]), int(found[2]))
    return _month(today.year, today.month)


def parse_day(value: str | None, within: Period) -> date | None:
    """The day of the day panel (YYYY-MM-DD within the period), None without one."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value) if _DAY.fullmatch(value) else None
    except ValueError:
        day = None
    if day is None or not within.start <= day < within.end:
        raise Invalid("day", f"a day is YYYY-MM-DD within {within.label}")
    return day


def check_filters(query: Any) -> dict[str, str]:
    """The filters of the query string (empty: no filter); Invalid for what no name can be."""
    found = {}
    for name in FILTERS:
        value = str(query.get(name, "") or "")
        if len(value) > 255 or not value.isprintable():
            raise Invalid(name, "no such name: printable, at most 255 characters")
        found[name] = value
    return found


def _at(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _status(session: Session) -> ColumnElement[Any]:
    """A task's status in SQL: its state, `warning` for a success with warnings."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:  # a JSON null (not an array) has no length there
        arrays = func.jsonb_typeof(Task.warnings) == "array"
        length: ColumnElement[Any] = case((arrays, func.jsonb_array_length(Task.warnings)), else_=0)
    else:
        length = func.json_array_length(Task.warnings)
    return case((and_(Task.state == "succeeded", func.coalesce(length, 0) > 0), "warning"), else_=Task.state)


def _day(session: Session) -> ColumnElement[Any]:
    """A run's creation day in UTC, as YYYY-MM-DD text on every engine."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", Run.created_at), "YYYY-MM-DD")
    return func.date(Run.created_at)


def _where(start: date, end: date, filters: dict[str, str]) -> list[ColumnElement[bool]]:
    where = [Run.created_at >= _at(start), Run.created_at < _at(end)]
    if filters.get("job"):
        named = select(Job.id).where(Job.name == filters["job"]).scalar_subquery()
        where.append(or_(Run.job_id == filters["job"], Run.job_id == named))
    if filters.get("vcenter"):
        where.append(Task.vcenter == filters["vcenter"])
    if filters.get("vm"):
        where.append(Task.vm_name == filters["vm"])
    return where


def day_counts(
    session: Session, start: date, end: date, filters: dict[str, str]
) -> dict[date, dict[str, int]]:
    """{day: {status: tasks}} of the tasks of runs created in [start, end)."""
    day, status = _day(session), _status(session)
    query = (
        select(day, status, func.count())
        .select_from(Run)
        .join(Task, Task.run_id == Run.id)
        .where(*_where(start, end, filters))
        .group_by(day, status)
    )
    out: dict[date, dict[str, int]] = defaultdict(dict)
    for when, state, n in session.execute(query):
        out[date.fromisoformat(str(when)[:10])][str(state)] = int(n)
    return out


def vm_days(
    session: Session, start: date, end: date, filters: dict[str, str]
) -> dict[tuple[str, str], dict[date, dict[str, Any]]]:
    """{(vm, vcenter): {day: {"status": the worst, "counts": {status: n}, "run": a run of the
    worst status}}} of the tasks of runs created in [start, end)."""
    day, status = _day(session), _status(session)
    query = (
        select(day, Task.vm_name, Task.vcenter, status, func.count(), func.max(Run.id))
        .select_from(Run)
        .join(Task, Task.run_id == Run.id)
        .where(*_where(start, end, filters))
        .group_by(day, Task.vm_name, Task.vcenter, status)
    )
    out: dict[tuple[str, str], dict[date, dict[str, Any]]] = defaultdict(dict)
    for when, vm, vcenter, state, n, run_id in session.execute(query):
        cell = out[(vm, vcenter)].setdefault(date.fromisoformat(str(when)[:10]), {"counts": {}, "runs": {}})
        cell["counts"][state] = int(n)
        cell["runs"][state] = run_id
    for days in out.values():
        for cell in days.values():
            worst = min(cell["counts"], key=lambda s: STATUSES.index(s) if s in STATUSES else 0)
            cell["status"], cell["run"] = worst, cell["runs"][worst]
    return out


def planned(
    session: Session, start: date, end: date, now: datetime, filters: dict[str, str]
) -> dict[date, list[dict[str, Any]]]:
    """{day: [{"at", "job_id", "job_name", "vms": [(vm, vcenter)]}]}: the slots of the enabled
    jobs' schedules after `now` within [start, end) (at most MAX_SLOTS per job)."""
    out: dict[date, list[dict[str, Any]]] = defaultdict(list)
    if _at(end) <= now:
        return out
    query = select(Job.id, Job.name, Job.vcenter, Job.vms, Job.schedule).where(Job.enabled.is_(True))
    if filters.get("job"):
        query = query.where(or_(Job.id == filters["job"], Job.name == filters["job"]))
    for job_id, name, default_vc, refs, raw in session.execute(query):
        if not raw:
            continue
        vms = [
            (str(r.get("name") or r.get("moref")), str(r.get("vcenter") or default_vc)) for r in refs or []
        ]
        if filters.get("vcenter"):
            vms = [v for v in vms if v[1] == filters["vcenter"]]
            if not vms and default_vc != filters["vcenter"]:
                continue
        if filters.get("vm"):
            vms = [v for v in vms if v[0] == filters["vm"]]
            if not vms:
                continue
        try:
            schedule = Schedule.model_validate(raw)
            slot = next_slot(schedule, max(now, _at(start) - timedelta(microseconds=1)))
            for _ in range(MAX_SLOTS):
                if slot >= _at(end):
                    break
                out[slot.astimezone(UTC).date()].append(
                    {"at": slot, "job_id": job_id, "job_name": name, "vms": vms}
                )
                slot = next_slot(schedule, slot)
        except ValueError:  # NeverFires, or a schedule this version cannot read: nothing planned
            continue
    return out


def month_view(session: Session, span: Period, now: datetime, filters: dict[str, str]) -> dict[str, Any]:
    """The month's weeks (Monday first), each a list of 7 cells (None outside the month), with
    the counts per status and the planned runs of each day."""
    counts = day_counts(session, span.start, span.end, filters)
    plans = planned(session, span.start, span.end, now, filters)
    cells = [
        {"day": d, "counts": counts.get(d, {}), "planned": len(plans.get(d, [])), "today": d == now.date()}
        for d in span.days()
    ]
    lead = span.start.weekday()
    padded: list[dict[str, Any] | None] = [None] * lead + list(cells)
    padded += [None] * (-len(padded) % 7)
    return {"weeks": [padded[i : i + 7] for i in range(0, len(padded), 7)]}


def week_view(session: Session, span: Period, now: datetime, filters: dict[str, str]) -> dict[str, Any]:
    """One row per VM (by name), a cell per day: its worst status and a run of it, or planned."""
    found = vm_days(session, span.start, span.end, filters)
    plans = planned(session, span.start, span.end, now, filters)
    grid: dict[tuple[str, str], dict[date, dict[str, Any]]] = defaultdict(dict, found)
    for day, slots in plans.items():
        for slot in slots:
            for vm in slot["vms"]:
                grid[vm].setdefault(day, {"status": "planned", "run": None, "counts": {}, "at": slot["at"]})
    rows = [{"vm": vm, "vcenter": vc, "days": grid[(vm, vc)]} for vm, vc in sorted(grid)]
    return {"rows": rows}


def day_panel(session: Session, day: date, now: datetime, filters: dict[str, str]) -> dict[str, Any]:
    """One day's VMs, each with its statuses and a run of each, and the day's planned runs."""
    found = vm_days(session, day, day + timedelta(days=1), filters)
    vms = [{"vm": vm, "vcenter": vc, **cells[day]} for (vm, vc), cells in sorted(found.items())]
    plans = sorted(
        planned(session, day, day + timedelta(days=1), now, filters).get(day, []), key=lambda p: p["at"]
    )
    return {"day": day, "vms": vms, "planned": plans}
