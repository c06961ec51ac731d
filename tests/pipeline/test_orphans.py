"""The snapshotter's start-up sweep: vbm snapshots no live run owns are removed, others kept.

A snapshot is vbm's by its mark (an HMAC under the installation's key in its description), never
by its name: a user's snapshot named `vbm-...` is the user's, left alone, and a backup of that VM
is refused as for any other snapshot not made by vbm.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shared.catalog import marker
from shared.db.audit import AuditRecord
from shared.db.models import Alert, SnapshotLedger
from shared.settings import VCenterSettings
from shared.vsphere import VCenter
from tests.pipeline.conftest import Pipeline


async def test_orphaned_vbm_snapshots_are_removed_at_start(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory()
    vc = VCenter(
        VCenterSettings(
            name="lab", url=p.lab.sdk_url, username=p.lab.username, password=p.lab.password, verify_tls=False
        )
    )
    web, db = p.lab.vm("web")["moref"], p.lab.vm("db")["moref"]
    secret = marker.key(p.sessions)
    orphan = "vbm-job-x-20260101T020000Z"  # from a run the database knows nothing of
    vc.create_snapshot(web, orphan, description=marker.description(secret, "lab", web, orphan, "job-x-2026"))
    user = vc.create_snapshot(db, "before upgrade")
    fake = vc.create_snapshot(
        db, "vbm-mine", description="vbm backup snapshot of run x: [vbm:0123456789abcdef01234567]"
    )
    p.start("snapshotter")
    for _ in range(100):
        if p.lab.snapshots("web") == []:
            break
        await asyncio.sleep(0.2)
    assert p.lab.snapshots("web") == []
    # never touch what vbm did not make, even named like vbm's
    assert p.lab.snapshots("db") == ["before upgrade", "vbm-mine"]
    for _ in range(50):  # the ledger is written just after the removal
        with p.sessions() as s:
            entry = s.get(SnapshotLedger, (orphan, web, "lab"))
            if entry is not None and entry.state == "removed":
                break
        await asyncio.sleep(0.1)
    assert entry is not None and entry.state == "removed"
    for _ in range(50):  # and the audit record just after the ledger
        with p.sessions() as s:
            if s.query(AuditRecord).filter(AuditRecord.action == "snapshot.cleanup").count():
                break
        await asyncio.sleep(0.1)
    with p.sessions() as s:
        assert s.get(SnapshotLedger, ("vbm-mine", db, "lab")) is None
        assert s.query(Alert).count() == 0
        [cleanup] = s.query(AuditRecord).filter(AuditRecord.action == "snapshot.cleanup").all()
        assert (cleanup.actor, cleanup.target, cleanup.result) == (
            "system:snapshotter",
            f"vm:lab/{web}",
            "ok",
        )
        assert orphan in cleanup.params

    # a backup of that VM is refused: a user's snapshot named vbm-... is still the user's
    p.start("mover", "verifier", "notifier")
    run = await p.wait_run(await p.run_job(p.create_job("after", ["db"])), timeout=60)
    (task,) = p.tasks(run.id)
    assert run.state == "failed" and "2 snapshot(s) not made by vbm ('before upgrade', 'vbm-mine')" in (
        task.error or ""
    ), task.error
    vc.remove_snapshot(fake.moref)
    vc.remove_snapshot(user.moref)
    vc.close()
    p.assert_clean()
