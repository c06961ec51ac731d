"""The catalog's gauges when the database cannot be read: the page still goes out, and says so."""

from __future__ import annotations

from pathlib import Path

from shared.clock import utcnow
from shared.db import make_engine, make_sessionmaker
from shared.observe.catalog import CatalogCollector
from shared.observe.exposition import registry, render
from tests.observe.promtool import check_metrics, names, value


def test_an_unreadable_catalog_is_a_gauge_not_an_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: every query fails
    try:
        text = render(registry(None, [CatalogCollector(make_sessionmaker(engine), utcnow, ["vc1"])])).decode()
    finally:
        engine.dispose()
    check_metrics(text)
    assert value(text, "vbm_catalog_up") == 0
    assert "vbm_open_snapshots" not in names(text)  # no half-read page
    assert value(text, "process_resident_memory_bytes") > 0  # the counters still go out
