"""Helpers of the metrics tests: Prometheus' own checker of an exposition, and its parser."""

from __future__ import annotations

import functools
import shutil
import subprocess

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import shared.observe.bus_metrics
import shared.observe.metrics  # noqa: F401 - defines vbm's counted metrics on the default registry
from shared.clock import utcnow
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.observe.catalog import CatalogCollector

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def check_metrics(text: str) -> None:
    """`promtool check metrics` reads the page on stdin: it must find no problem at all."""
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        f"promtool check metrics: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a page: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (KeyError: none)."""
    found = [v for (n, ls), v in samples(text).items() if n == name and set(labels.items()) <= ls]
    if not found:
        raise KeyError(f"no sample {name}{labels} in the page")
    return sum(found)


def names(text: str) -> set[str]:
    """The metric families a page has (as PromQL names them: counters with _total, histograms'
    _bucket/_sum/_count series)."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@functools.cache
def exported() -> frozenset[str]:
    """Every series name vbm's processes can show: the counted metrics (the default registry,
    with Python's process figures) and the catalog's gauges, as PromQL names them."""
    families = list(REGISTRY.collect())
    engine = make_engine("sqlite://")
    upgrade(engine)
    families += list(CatalogCollector(make_sessionmaker(engine), utcnow, ["vc1"]).collect())
    engine.dispose()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}  # fmt: skip
    return frozenset(f.name + s for f in families for s in suffixes.get(f.type, ("",)))
