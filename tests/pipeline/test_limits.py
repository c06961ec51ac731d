"""The limits' bookkeeping on a real database (SQLite and PostgreSQL): leases under contention,
what admission counts, and the run log's trimming."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.snapshotter.limits import Usage
from shared.catalog import leases, runlog
from shared.db.models import Job, Run, Task
from shared.db.work import Lease, RunLogLine

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def test_forty_holders_racing_for_three_slots_get_three(sessions: sessionmaker[Session]) -> None:
    key = leases.datastore("vc", "ds1")

    def take(i: int) -> int | None:
        return leases.acquire(sessions, key, 3, f"h{i}", NOW)

    with ThreadPoolExecutor(8) as pool:
        got = [slot for slot in pool.map(take, range(40)) if slot is not None]
    assert sorted(got) == [0, 1, 2]
    with sessions() as s:
        assert leases.held(s, NOW) == {key: 3}

    # a limit lowered meanwhile (latency control): nobody new gets in until the holders drop below it
    assert leases.acquire(sessions, key, 2, "late", NOW) is None
    with sessions() as s:
        holders = {row.slot: row.holder for row in s.scalars(select(Lease))}
    leases.release(sessions, key, 0, holders[0])
    assert leases.acquire(sessions, key, 2, "late", NOW) is None  # 2 held, limit 2
    leases.release(sessions, key, 1, holders[1])
    assert leases.acquire(sessions, key, 2, "late", NOW) is not None

    # a holder that died: its slot is free once it expires; a renewal after that says it was lost
    later = NOW + leases.TTL + timedelta(seconds=1)
    assert leases.acquire(sessions, key, 2, "after", later) is not None
    assert not leases.renew(sessions, key, 2, holders[2], later)


def _task(name: str, *, datastores: list[str], host: str, run: str = "r1") -> Task:
    return Task(
        id=f"{run}.vc:{name}",
        run_id=run,
        vcenter="vc",
        vm_moref=name,
        vm_name=name,
        datastores=datastores,
        host=host,
    )


LIMITS = SimpleNamespace(
    snapshots_per_datastore=2,
    streams_per_datastore=4,
    snapshots_per_host=4,
    streams_per_host=8,
    streams_per_repository=3,
)


def test_snapshots_being_removed_count_toward_the_snapshot_limits_not_the_streams() -> None:
    busy = [_task("vm-1", datastores=["ds1"], host="esx1")]
    removing = [_task("vm-2", datastores=["ds1"], host="esx1")]  # transferred, snapshot consolidating
    usage = Usage.of(busy, {"r1": "job"}, {"job": "/repo"}, removing)
    reason = usage.blocked(_task("vm-3", datastores=["ds1"], host="esx1"), "/repo", LIMITS, {})
    assert reason == "waiting for a snapshot slot on datastore ds1 (2 of 2)"
    assert usage.total == 1 and usage.datastores[leases.datastore("vc", "ds1")] == 1
    # on another datastore of the same host nothing stops it
    assert usage.blocked(_task("vm-4", datastores=["ds2"], host="esx1"), "/repo", LIMITS, {}) is None


def test_streams_per_repository_and_per_host_and_a_slowed_datastore_hold_admission() -> None:
    busy = [_task(f"vm-{i}", datastores=[f"ds{i}"], host="esx1") for i in range(3)]
    usage = Usage.of(busy, {"r1": "job"}, {"job": "/repo"})
    nxt = _task("vm-9", datastores=["ds9"], host="esx2")
    assert usage.blocked(nxt, "/repo", LIMITS, {}) == "waiting for a stream to the repository (3 of 3)"
    assert usage.blocked(nxt, "/other", LIMITS, {}) is None
    tight = SimpleNamespace(**{**vars(LIMITS), "streams_per_host": 3})
    same_host = _task("vm-8", datastores=["ds8"], host="esx1")
    assert usage.blocked(same_host, "/other", tight, {}) == "waiting for a stream on host esx1 (3 of 3)"
    slowed = {leases.datastore("vc", "ds0"): (1, 45.0)}
    on_slow = _task("vm-7", datastores=["ds0"], host="esx2")
    reason = usage.blocked(on_slow, "/other", LIMITS, slowed)
    assert reason is not None and "ds0 is slow (45 ms to first byte)" in reason and "1 stream(s)" in reason


def test_the_run_log_forgets_runs_that_are_gone_and_lines_older_than_half_a_year(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        s.add(
            Job(
                id="j1",
                name="j1",
                vcenter="vc",
                vms=[],
                selection={},
                options={},
                repository="/r",
                retention={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        s.add(Run(id="kept", job_id="j1", trigger="manual", state="succeeded", created_at=NOW))
        runlog.write(s, "kept", "recent", NOW - timedelta(days=3))
        runlog.write(s, "kept", "ancient", NOW - runlog.KEEP - timedelta(days=1))
        runlog.write(s, "deleted-run", "orphan", NOW)
    with sessions.begin() as s:
        assert runlog.trim(s, NOW) == 2
    with sessions() as s:
        assert [line["message"] for line in runlog.lines(s, "kept")] == ["recent"]
        assert s.scalar(select(func.count()).select_from(RunLogLine)) == 1
