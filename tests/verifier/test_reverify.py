"""Scheduled re-verification: a round reads every chunk once, a slice per cycle, and names damage."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.verifier.handlers import Deps
from services.verifier.reverify import cycle
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Alert, RestorePointRow
from shared.repo import LocalBackend, Repository, Writer, restore_point
from shared.repo.repository import chunk_key
from shared.runtime.service import Context
from shared.settings import Settings, VerifySettings
from shared.vsphere.pool import VCenters

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
CHUNK = 64 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now


class NoRelay:
    def kick(self) -> None:
        pass


class Image:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


async def seed(repo_dir: Path, sessions: Any, images: list[bytes]) -> list[str]:
    repo = await Repository.init(LocalBackend(repo_dir), chunk_size=CHUNK)
    writer = Writer(repo)
    ids = []
    try:
        for i, image in enumerate(images):
            disk, _ = await writer.write_disk(
                Image(image), key=2000, capacity=len(image), file="vm/vm-flat.vmdk"
            )
            finished = T0 + timedelta(minutes=i)
            rp = restore_point(vm_name=f"vm{i}", started=finished, finished=finished, disks=[disk])
            await repo.commit(rp)
            ids.append(rp.id)
            with sessions.begin() as s:
                s.add(
                    RestorePointRow(
                        id=rp.id, vcenter="lab", vm_moref=f"vm-{i}", vm_name=f"vm{i}",
                        repository=str(repo_dir), kind="full", disks=[{"key": 2000, "capacity": len(image)}],
                        logical_bytes=len(image),
                        bytes_read=0, bytes_stored=0, started_at=finished, finished_at=finished,
                        verify_state="ok", verified_at=finished, verify_problems=[],
                    )
                )  # fmt: skip
    finally:
        writer.close()
    return ids


@pytest.fixture
def deps(tmp_path: Path) -> tuple[Deps, Clock]:
    engine = make_engine(f"sqlite:///{tmp_path / 'vbm.db'}")
    upgrade(engine)
    settings = Settings(data_dir=tmp_path / "data", verify=VerifySettings(round_cycles=4, cycle_seconds=3600))
    clock = Clock()
    ctx = Context(
        "verifier", "verifier-test", settings, None, engine, make_sessionmaker(engine),  # type: ignore[arg-type]
        asyncio.Event(), NoRelay(), clock,  # type: ignore[arg-type]
    )  # fmt: skip
    return Deps(ctx, VCenters(settings)), clock


def rows(deps: Deps) -> dict[str, RestorePointRow]:
    with deps.ctx.sessions() as s:
        return {r.id: r for r in s.scalars(select(RestorePointRow))}


async def test_a_round_reads_every_chunk_once_and_marks_points_verified(
    deps: tuple[Deps, Clock], tmp_path: Path
) -> None:
    d, clock = deps
    shared_part = os.urandom(8 * CHUNK)
    images = [
        shared_part + os.urandom(24 * CHUNK),
        shared_part + os.urandom(24 * CHUNK),
        os.urandom(40 * CHUNK),
    ]
    ids = await seed(tmp_path / "repo", d.ctx.sessions, images)
    repo = await Repository.open(LocalBackend(tmp_path / "repo"))
    referenced = set()
    for rp_id in ids:
        referenced |= (await repo.load(rp_id)).chunk_ids()

    read = 0
    for k in range(4):
        report = await cycle(d, str(tmp_path / "repo"))
        assert report is not None and report.ok, k
        assert report.restore_points == 3 and report.chunks_referenced == len(referenced)
        read += report.chunks_read
        assert await cycle(d, str(tmp_path / "repo")) is None  # not due again within the hour
        if k < 3:
            assert {r.verify_how for r in rows(d).values()} == {None}  # the round is not complete
        clock.now += timedelta(hours=1)
    assert read == len(referenced)  # every chunk exactly once over the round
    for row in rows(d).values():
        assert (row.verify_how, row.verify_state) == ("scheduled", "ok")
        assert row.verified_at == T0 + timedelta(days=1, hours=3)


async def test_damage_is_found_within_a_round_and_names_the_points(
    deps: tuple[Deps, Clock], tmp_path: Path
) -> None:
    d, clock = deps
    shared_part = os.urandom(4 * CHUNK)
    images = [
        shared_part + os.urandom(12 * CHUNK),
        shared_part + os.urandom(12 * CHUNK),
        os.urandom(16 * CHUNK),
    ]
    ids = await seed(tmp_path / "repo", d.ctx.sessions, images)
    repo = await Repository.open(LocalBackend(tmp_path / "repo"))
    victim = next(
        c for c in (await repo.load(ids[0])).disk(2000).chunks if isinstance(c, str)
    )  # shared by 0, 1
    path = tmp_path / "repo" / chunk_key(victim)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x80
    path.write_bytes(bytes(data))

    found_at = None
    for k in range(4):
        report = await cycle(d, str(tmp_path / "repo"))
        assert report is not None
        if report.damaged_chunks:
            found_at = k
            assert set(report.damaged_restore_points) == {ids[0], ids[1]}
            state = rows(d)
            assert state[ids[0]].verify_state == state[ids[1]].verify_state == "failed"
            assert f"chunk {victim}" in state[ids[0]].verify_problems[0]
        clock.now += timedelta(hours=1)
    assert found_at is not None
    state = rows(d)
    assert state[ids[2]].verify_state == "ok" and state[ids[2]].verify_how == "scheduled"
    assert state[ids[0]].verify_state == "failed" and state[ids[1]].verify_state == "failed"
    with d.ctx.sessions() as s:
        alerts = list(s.scalars(select(Alert)))
    assert len(alerts) == 1 and alerts[0].kind == "verify_failed"
    assert ids[0] in alerts[0].message and ids[1] in alerts[0].message and ids[2] not in alerts[0].message
