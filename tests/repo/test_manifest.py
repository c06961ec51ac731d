from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.repo import ManifestError
from shared.repo import manifest as m
from shared.repo.chunk import chunk_id

A, B = chunk_id(b"a"), chunk_id(b"b")
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def disk(chunks: tuple, capacity: int = 4 * 10 + 2) -> m.DiskEntry:  # type: ignore[type-arg]
    entries = m.expand(chunks)
    return m.DiskEntry(
        key=2000,
        file="vm/vm-flat.vmdk",
        capacity=capacity,
        chunk_size=4,
        chunks=chunks,
        tree=m.tree_digest(entries, capacity, 4),
        stored_windows=0,
    )


def test_compact_and_expand() -> None:
    entries = [None, None, A, None, B, B, None, None, None]
    assert m.compact(entries) == (2, A, 1, B, B, 3)
    assert m.expand(m.compact(entries)) == entries


def test_windows_must_cover_capacity_exactly() -> None:
    d = disk((A, 9, B))  # 11 windows: 10 of 4 bytes and a short one of 2
    assert [w for w in d.windows()][-1] == (40, 2, B)
    with pytest.raises(ValidationError, match="windows listed"):
        disk((A, 8, B))


def test_tree_digest_depends_on_order_and_zero_length() -> None:
    assert m.tree_digest([A, B], 8, 4) != m.tree_digest([B, A], 8, 4)
    assert m.tree_digest([A, None], 8, 4) != m.tree_digest([A, None], 6, 4)


def rp() -> m.RestorePoint:
    return m.RestorePoint(
        id="rp-20261126T000000Z-0123abcd", vm_name="web", started=NOW, finished=NOW, disks=(disk((A, 9, B)),)
    )


def test_dump_load_round_trip() -> None:
    point = rp()
    assert m.load(m.dump(point), point.id) == point


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda raw: raw.replace(b'"web"', b'"wex"'), "fails its checksum"),
        (lambda raw: raw[:-5], "fails its checksum"),
        (lambda raw: raw[:30], "truncated"),
        (lambda raw: b"", "truncated"),
    ],
)
def test_damaged_manifests_are_refused(damage, needle: str) -> None:  # type: ignore[no-untyped-def]
    point = rp()
    with pytest.raises(ManifestError, match=needle):
        m.load(damage(m.dump(point)), point.id)


def test_manifest_under_the_wrong_name() -> None:
    with pytest.raises(ManifestError, match="names itself"):
        m.load(m.dump(rp()), "rp-20261126T000000Z-ffffffff")
