"""deploy/: the alert rules (checked and unit-tested by promtool), the Prometheus config, and the
Grafana dashboard (its shape, and that every query names only metrics vbm exports)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observe.promtool import PROMTOOL, exported

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "vbm.json"
# Series Prometheus makes itself for each target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan"}  # fmt: skip


def promtool(*args: str) -> str:
    done = subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    assert "SUCCESS: 10 rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")
    assert "is valid prometheus config" in promtool("check", "config", "prometheus.yml")


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    rules = [
        r["alert"]
        for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    ]
    cases = [
        c
        for t in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        for c in t["alert_rule_test"]
    ]
    for rule in rules:
        mine = [c for c in cases if c["alertname"] == rule]
        assert any(c["exp_alerts"] for c in mine), f"{rule} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule} is never tested not firing"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or Grafana's label_values()) reads."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)  # strings
    expr = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)[^)]*\)", r"\1", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    found = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = m.group(1), m.group(2)
        if not call and name.lower() not in KEYWORDS:
            found.add(name)
    return found


def test_metric_names_of_promql() -> None:
    expr = (
        'sum by (le, vm) (rate(backup_duration_seconds_bucket{job=~"$job",vm!="x y"}[5m] offset 1h))'
        " / on (vm) vbm_x"
    )
    assert metric_names(expr) == {"backup_duration_seconds_bucket", "vbm_x"}
    assert metric_names('label_values(vbm_runs{job=~"$job"}, state)') == {"vbm_runs"}
    assert metric_names("predict_linear(a[7d], 30 * 86400) > 0.8 or vector(0)") == {"a"}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_the_dashboard_is_a_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list), ("time", dict)):
        assert isinstance(dashboard.get(key), kind), key
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "vm"} <= variables
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    titles = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy") and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        assert panel["type"] in {"stat", "timeseries", "table", "gauge", "bargauge"}, panel["type"]
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= variables, f"{panel['title']}: unknown variables {used - variables}"
    # the overview the issue asks for
    wanted = (
        "success rate",
        "failed",
        "duration per vm",
        "data moved",
        "forecast",
        "open vbm snapshots",
        "queue",
    )
    for word in wanted:
        assert any(word in t.lower() for t in titles), f"no panel about {word!r}"


def queries() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"dashboard: {panel['title']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"dashboard: ${variable['name']}", variable["definition"]
    for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


QUERIES = list(queries())


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[f"{w} {i}" for i, (w, _) in enumerate(QUERIES)])
def test_every_query_names_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr}"
    unknown = names - exported() - SYNTHETIC
    assert not unknown, f"{where} reads {sorted(unknown)}, which vbm does not export"
