"""The one end of a restore (shared/catalog/restore_end.py), on its own."""

from __future__ import annotations

from datetime import timedelta

from shared.catalog.restore_end import end_restore
from shared.db.models import Restore
from tests.unit.conftest import World

MiB = 1024 * 1024


def test_an_ended_restore_shows_its_average_rate(world: World) -> None:
    now = world.clock()
    with world.sessions.begin() as s:
        row = Restore(
            id="restore-1", restore_point_id="rp-1", repository="/repo", vcenter="vc1", mode="new_vm",
            target={"vcenter": "vc1", "name": "web-copy", "datastore": "ds1"}, state="running",
            phase="upload", bytes_total=64 * MiB, bytes_done=60 * MiB, rate=123.0, created={"vm": "vm-9"},
            created_at=now - timedelta(seconds=20), updated_at=now, started_at=now - timedelta(seconds=16),
        )  # fmt: skip
        s.add(row)
        end_restore(s, row, "succeeded", None, now, vm_moref="vm-9", bytes_done=64 * MiB)
    with world.sessions() as s:
        ended = s.get(Restore, "restore-1")
        assert ended is not None
        assert (ended.state, ended.phase, ended.bytes_done) == ("succeeded", "done", 64 * MiB)
        assert ended.rate == 4 * MiB  # 64 MiB in 16 s
