"""The snapshotter's start-up sweep: vbm snapshots no live run owns are removed, others kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
    vc.create_snapshot(web, "vbm-job-x-20260101T020000Z")  # from a run the database knows nothing of
    user = vc.create_snapshot(db, "before upgrade")
    p.start("snapshotter")
    for _ in range(100):
        if p.lab.snapshots("web") == []:
            break
        await asyncio.sleep(0.2)
    assert p.lab.snapshots("web") == []
    assert p.lab.snapshots("db") == ["before upgrade"]  # never touch what vbm did not make
    with p.sessions() as s:
        entry = s.get(SnapshotLedger, ("vbm-job-x-20260101T020000Z", web))
        assert entry is not None and entry.state == "removed"
        assert s.query(Alert).count() == 0
    vc.remove_snapshot(user.moref)
    vc.close()
    p.assert_clean()
