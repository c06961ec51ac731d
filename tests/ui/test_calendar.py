"""The backup calendar: a seeded month's days counted per status (a success green, a failure red,
a warning yellow, planned runs grey and outlined, from the schedules), the week view of VMs by day
linking to their runs, a day's panel, the filters, odd values a 4xx page (never a 500); in a real
browser, a real lab backup shows today's cell green for its VM and a failed run red, and the arrow
keys move the focus between days."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from playwright.async_api import Page, expect

from shared.catalog import users
from shared.catalog.jobs import job_row
from shared.db.models import Run, Task
from shared.model.access import Role
from shared.model.jobs import JobSpec
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi
from tests.ui.conftest import PEOPLE, System, log_in
from tests.ui.test_runs import _console, _make_job, _start

HTML = {"Accept": "text/html"}
DAILY = {"kind": "preset", "preset": "daily", "at": "02:00", "timezone": "UTC"}


def _months(today: date) -> tuple[date, date]:
    """The first days of last month (all past) and next month (all future)."""
    first = today.replace(day=1)
    last = (first - timedelta(days=1)).replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return last, following


def _seed(api: Api, past: date) -> None:
    """Two jobs: "nightly" (daily at 02:00 UTC, web and db on lab) and "other" (unscheduled,
    far on vc2). On the 3rd of `past`'s month: web succeeded, db failed, app succeeded with a
    warning (nightly), far succeeded (other); on the 4th web succeeded with a warning."""
    now = utcnow()
    with api.ctx.sessions.begin() as s:
        users.add(s, "vic", Role.VIEWER, now, SecuritySettings(), "viewer pass phrase 3")
        nightly = JobSpec.model_validate(
            {"name": "nightly", "vcenter": "lab", "vms": [{"name": "web"}, {"name": "db"}]}
        )
        job = job_row(nightly, "job-nightly", now, "/tmp/repo")
        job.schedule = DAILY
        s.add(job)
        other = JobSpec.model_validate({"name": "other", "vcenter": "vc2", "vms": [{"name": "far"}]})
        s.add(job_row(other, "job-other", now, "/tmp/repo"))
        s.flush()
        third = datetime.combine(past.replace(day=3), datetime.min.time(), tzinfo=UTC) + timedelta(hours=2)
        fourth = third + timedelta(days=1)
        for run_id, job_id, at in (("run-3", "job-nightly", third), ("run-3o", "job-other", third),
                                   ("run-4", "job-nightly", fourth)):  # fmt: skip
            s.add(
                Run(
                    id=run_id,
                    job_id=job_id,
                    trigger="schedule",
                    state="partial",
                    created_at=at,
                    finished_at=at,
                )
            )
        s.flush()
        for run_id, vm, vc, state, warnings in (
            ("run-3", "web", "lab", "succeeded", []),
            ("run-3", "db", "lab", "failed", []),
            ("run-3", "app", "lab", "succeeded", ["quiesce fell back to a crash-consistent snapshot"]),
            ("run-3o", "far", "vc2", "succeeded", []),
            ("run-4", "web", "lab", "succeeded", ["a disk skipped"]),
        ):
            at = third if run_id != "run-4" else fourth
            s.add(Task(id=f"{run_id}.{vm}", run_id=run_id, vcenter=vc, vm_moref=f"vm-{vm}", vm_name=vm,
                       phase="done", state=state, warnings=warnings, created_at=at,
                       updated_at=at))  # fmt: skip


async def _log_in(api: Api) -> None:
    await log_in(api.client, *PEOPLE[Role.VIEWER], "/calendar")


async def _get(api: Api, path: str) -> tuple[int, str]:
    async with api.client.get(path, headers=HTML, allow_redirects=False) as resp:
        return resp.status, await resp.text()


def _cell(page: str, day: date) -> str:
    """The month grid's cell of `day` (its HTML)."""
    found = re.search(rf'<td class="cal-day[^"]*" data-date="{day.isoformat()}">(.*?)</td>', page, re.S)
    assert found, f"no cell for {day}"
    return found[1]


def _label(cell: str) -> str:
    found = re.search(r'aria-label="([^"]*)"', cell)
    assert found
    return found[1]


async def test_month_week_day_and_filters(make_api: MakeApi, db_url: str) -> None:
    """On SQLite and on PostgreSQL (the day and the warning are counted in each one's SQL)."""
    api = await make_api(db_url)
    past, future = _months(utcnow().date())
    _seed(api, past)
    status, _ = await _get(api, "/calendar")
    assert status == 303  # a person not logged in goes to the login page
    await _log_in(api)
    status, page = await _get(api, "/calendar")
    assert status == 200, page[:400]
    assert 'href="/calendar"' in page and ">Calendar<" in page  # the navigation entry
    assert 'aria-current="date"' in page  # today

    status, page = await _get(api, f"/calendar?month={past:%Y-%m}")
    assert status == 200, page[:400]
    third, fourth = _cell(page, past.replace(day=3)), _cell(page, past.replace(day=4))
    assert _label(third).endswith(": 1 failed, 1 warning, 2 succeeded"), _label(third)
    assert '<span class="cal-count failed" title="Failed">1<span class="cal-sr"> failed</span>' in third
    assert '<span class="cal-count warning" title="Warning">1' in third
    assert '<span class="cal-count succeeded" title="Succeeded">2' in third
    assert _label(fourth).endswith(": 1 warning"), _label(fourth)
    assert _label(_cell(page, past.replace(day=5))).endswith(": nothing")  # past days plan nothing
    assert "planned" not in page.split("<tbody>")[1].split("</table>")[0]

    # planned runs: the daily schedule, once a day, outlined grey; a job without a schedule none
    status, page = await _get(api, f"/calendar?month={future:%Y-%m}")
    assert status == 200
    for day in (future, future.replace(day=15)):
        cell = _cell(page, day)
        assert _label(cell).endswith(": 1 planned") and 'class="cal-count planned"' in cell
    status, page = await _get(api, f"/calendar?month={future:%Y-%m}&job=other")
    assert _label(_cell(page, future)).endswith(": nothing")

    # filters: job (id or name), vCenter, VM
    for query, said in (("job=nightly", "1 failed, 1 warning, 1 succeeded"), ("job=job-other", "1 succeeded"),
                        ("vcenter=vc2", "1 succeeded"), ("vm=db", "1 failed"),
                        ("vm=nobody", "nothing")):  # fmt: skip
        status, page = await _get(api, f"/calendar?month={past:%Y-%m}&{query}")
        assert status == 200, (query, page[:300])
        assert _label(_cell(page, past.replace(day=3))).endswith(": " + said), (
            query,
            _label(_cell(page, past.replace(day=3))),
        )
        assert f'name="{query.split("=")[0]}"' in page

    # a day opens its VMs, each linking to its run
    status, page = await _get(api, f"/calendar?month={past:%Y-%m}&day={past.replace(day=3).isoformat()}")
    assert status == 200
    panel = page.split('id="day-panel"')[1]
    assert re.search(
        r'<th scope="row">db</th><td>lab</td>\s*<td><a class="badge failed" href="/runs/run-3"', panel
    )
    assert re.search(
        r'<th scope="row">app</th><td>lab</td>\s*<td><a class="badge warning" href="/runs/run-3"', panel
    )
    assert 'class="badge succeeded" href="/runs/run-3o"' in panel

    # the week view: a row per VM, a cell per day, its run
    iso = past.replace(day=3).isocalendar()
    status, page = await _get(api, f"/calendar?week={iso.year}-W{iso.week:02d}")
    assert status == 200, page[:400]
    assert re.search(
        r'<a class="badge failed" href="/runs/run-3"[^>]*aria-label="db, [^"]*: failed, open the run"', page
    )
    assert 'aria-label="web, ' in page and 'class="badge warning" href="/runs/run-4"' in page
    iso = future.replace(day=10).isocalendar()
    status, page = await _get(api, f"/calendar?week={iso.year}-W{iso.week:02d}&vm=web")
    assert page.count('class="cal-count planned"') >= 7 and "db, " not in page


async def test_odd_values_are_4xx(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    _seed(api, _months(utcnow().date())[0])
    await _log_in(api)
    for query in ("month=2026-13", "month=2026-00", "month=abc", "month=0000-01", "month=99999-01",
                  "month=2026-1", "week=2026-W60", "week=2026-W00", "week=2026-W53x", "week=1969-W01",
                  "month=2026-01&week=2026-W01",
                  "month=2026-02&day=2026-02-30", "month=2026-02&day=2026-03-01", "month=2026-02&day=x",
                  "vm=%00", "job=" + "j" * 300, "month=%EF%BF%BF",
                  "week=\uff12\uff10\uff12\uff16-W01"):  # fmt: skip
        status, page = await _get(api, f"/calendar?{query}")
        assert 400 <= status < 500, (query, status, page[:300])
        assert "Error" in page or "error" in page, query
    status, _ = await _get(api, "/calendar?month=9998-12&day=9998-12-31")
    assert status == 200
    status, _ = await _get(api, "/calendar?week=2020-W53")  # 2020 has 53 ISO weeks
    assert status == 200


# ---- in a real browser --------------------------------------------------------------------------


async def _focused_day(page: Page) -> str:
    """The day of the focused cell ("" when the focus is not on a day)."""
    return str(
        await page.evaluate("(document.activeElement.closest('td') || {dataset: {}}).dataset.date || ''")
    )


async def test_today_after_a_real_backup(system: Callable[..., Awaitable[System]]) -> None:
    s = await system()
    job_id = await _make_job(s, "calendar", ["web"])
    run_id = await _start(s, job_id)
    run = await s.pipeline.wait_run(run_id)
    assert run.state == "succeeded", s.pipeline.dump(run_id)
    now = utcnow()
    with s.api.ctx.sessions.begin() as session:  # a failed run of another VM today (seeded)
        session.add(Run(id="seeded-failed", job_id=job_id, trigger="manual", state="failed", created_at=now,
                        finished_at=now))  # fmt: skip
        session.flush()
        session.add(Task(id="seeded-failed.db", run_id="seeded-failed", vcenter="lab", vm_moref="vm-db",
                         vm_name="db", phase="snapshot", state="failed", created_at=now,
                         updated_at=now))  # fmt: skip
    page = await s.logged_in(Role.VIEWER)
    errors = _console(page)
    await page.get_by_role("link", name="Calendar").click()
    today = page.locator("td.cal-day.today a[data-cell]")
    await expect(today).to_have_attribute("aria-label", re.compile(r"\(today\): 1 failed, 1 succeeded$"))
    await expect(today.locator(".cal-count.succeeded")).to_have_text("1 succeeded")
    await expect(today.locator(".cal-count.failed")).to_have_text("1 failed")
    await s.shot(page, "calendar")

    # arrow keys move between days: right/left a day, down/up a week (within the month)
    day = now.date()
    await today.focus()
    step = 1 if (day + timedelta(days=1)).month == day.month else -1
    await page.keyboard.press("ArrowRight" if step == 1 else "ArrowLeft")
    assert await _focused_day(page) == (day + timedelta(days=step)).isoformat()
    await page.keyboard.press("ArrowLeft" if step == 1 else "ArrowRight")
    assert await _focused_day(page) == day.isoformat()
    week = 7 if (day + timedelta(days=7)).month == day.month else -7
    await page.keyboard.press("ArrowDown" if week == 7 else "ArrowUp")
    assert await _focused_day(page) == (day + timedelta(days=week)).isoformat()
    await page.keyboard.press("ArrowUp" if week == 7 else "ArrowDown")
    assert await _focused_day(page) == day.isoformat()

    # the day opens its VMs (the focus stays on the day), and a VM's cell its run
    await page.keyboard.press("Enter")
    panel = page.locator("#day-panel")
    await expect(panel.get_by_role("link", name="db: 1 failed, open the run")).to_have_attribute(
        "href", "/runs/seeded-failed"
    )
    assert await _focused_day(page) == day.isoformat()
    await panel.get_by_role("link", name="web: 1 succeeded, open the run").click()
    await page.wait_for_url(f"**/runs/{run_id}")

    # the filter by VM, and the week view
    await page.goto("/calendar?vm=web")
    await expect(page.locator("td.cal-day.today a[data-cell]")).to_have_attribute(
        "aria-label", re.compile(r"\(today\): 1 succeeded$")
    )
    await page.get_by_role("link", name="Week view").click()
    await expect(
        page.get_by_role("link", name=re.compile(r"^web, .*: succeeded, open the run$"))
    ).to_have_attribute("href", f"/runs/{run_id}")
    await s.shot(page, "calendar-week")
    assert errors == [], errors
