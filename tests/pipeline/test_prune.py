"""Retention after a verified backup, then GC: the stored bytes fall by what the removed points
alone held, and what remains reads back byte-identical."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from sqlalchemy import select

from shared.catalog.audit_chain import verify
from shared.db.audit import AuditRecord
from shared.db.models import Pruned, RestorePointRow
from shared.repo import LocalBackend, Repository
from shared.repo.repository import chunk_key
from tests.pipeline.conftest import MIB, Pipeline


def chunk_bytes(p: Pipeline) -> int:
    return sum(f.stat().st_size for f in (p.repo_dir / "chunks").rglob("*") if f.is_file())


async def test_prune_after_verify_then_gc_frees_exactly_the_removed_points_chunks(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("keep1", ["web"], retention={"keep_last": 1})
    run1 = await p.run_job(job)
    assert (await p.wait_run(run1)).state == "succeeded", p.dump(run1)
    (rp1,) = p.restore_points(run1)
    repo = await Repository.open(LocalBackend(p.repo_dir))
    ids1 = (await repo.load(rp1.id)).chunk_ids()

    p.lab.guest_write("web", 2000, 0, os.urandom(3 * MIB))  # new data in the first windows
    content = {k: p.guest_disk("web", k) for k in (2000, 2001)}
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (rp2,) = p.restore_points(run2)

    for _ in range(100):  # the verifier prunes right after verifying the new point
        with p.sessions() as s:
            if s.get(RestorePointRow, rp1.id) is None:
                break
        await asyncio.sleep(0.1)
    with p.sessions() as s:
        assert s.get(RestorePointRow, rp1.id) is None, "the older point was not pruned"
        pruned = list(s.scalars(select(Pruned)))
    assert [(x.id, x.reason) for x in pruned] == [(rp1.id, "no rule keeps it")]
    assert await repo.restore_point_ids() == [rp2.id]

    ids2 = (await repo.load(rp2.id)).chunk_ids()
    only_rp1 = ids1 - ids2
    assert only_rp1, "the test needs chunks that only the pruned point held"
    held = sum((p.repo_dir / chunk_key(c)).stat().st_size for c in only_rp1)
    before = chunk_bytes(p)
    # GC spares what is younger than five minutes before the oldest running backup (or now):
    # let the chunks be a quarter of an hour old, as if the GC ran later that night
    old = time.time() - 900
    for f in (p.repo_dir / "chunks").rglob("*"):
        os.utime(f, (old, old))

    out, err, code = await p.cli("gc")
    assert code == 0, err
    assert f"freed {len(only_rp1)} chunks ({held} bytes)" in out, out
    assert before - chunk_bytes(p) == held
    for key, data in content.items():
        assert await p.read_back(rp2.id, key) == data
    # both are in the audit log: the verifier's prune on its own, the GC someone ran
    with p.sessions() as s:
        records = {r.action: r for r in s.scalars(select(AuditRecord))}
        assert verify(s).ok
    prune_rec, gc_rec = records["prune"], records["gc"]
    assert prune_rec.actor == "system:verifier" and rp1.id in prune_rec.params
    assert prune_rec.target.startswith("vm:lab/") and f"job:{job}" in prune_rec.target
    assert gc_rec.actor.startswith("os:") and gc_rec.source == "cli"
    assert gc_rec.target == f"repository:{p.repo_dir}" and f'"bytes_removed":{held}' in gc_rec.params
    p.assert_clean()
