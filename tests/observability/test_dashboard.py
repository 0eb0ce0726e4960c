"""The Grafana dashboard: valid JSON, and no panel that shows "No data" because of a typo.

Every expression is parsed by promtool, run against the test Prometheus (which scrapes the real
server), and may only name metrics that something exports. Panels on metrics the CPU test server
always exports must return series; GPU, sidecar and kube-state-metrics panels may be empty here.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability import catalog
from tests.observability.conftest import DASHBOARD
from tests.observability.prom import TARGET_LABELS, Prometheus, promtool

#: Concrete values for Grafana's variables: the test Prometheus' target labels, a 5m rate window.
VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "15s",
    "__range": "1h",
    "namespace": TARGET_LABELS["namespace"],
    "pod": TARGET_LABELS["pod"],
}
#: Series the CPU test server does not have: GPU memory (CUDA only) and the webhook sidecar's.
MAY_BE_EMPTY = {name for name in catalog.server_sample_names() if "_gpu_" in name} | set(catalog.sidecar_sample_names())
SELECTOR_FILTER = 'namespace=~"$namespace"'


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def substitute(expr: str) -> str:
    """Replace `$var` and `${var}` with the concrete values Grafana would send."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLES, f"unknown dashboard variable ${name} in {expr!r}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels that show data (rows only group them), including those inside collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []))
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def targets() -> list[tuple[str, str]]:
    """(panel title/refId, expr) of every query on the dashboard."""
    return [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in query_panels(load_dashboard())
        for target in panel["targets"]
    ]


def test_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "pod"} <= variables.keys()


def test_every_panel_has_targets_and_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in query_panels(dashboard):
        assert panel["targets"], f"{panel['title']}: no queries"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']}/{target['refId']}: empty expr"
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_bark_selector_follows_the_namespace_and_pod_variables() -> None:
    for where, expr in targets():
        for match in re.finditer(r"\bbark_\w+", expr):
            rest = expr[match.end() :]
            assert rest.startswith("{"), f"{where}: {match.group()} has no label selector"
            selector = rest[: rest.index("}")]
            assert SELECTOR_FILTER in selector, f"{where}: {match.group()} ignores $namespace"
            if match.group() != "bark_model_info":  # replicas count the whole namespace
                assert 'pod=~"$pod"' in selector, f"{where}: {match.group()} ignores $pod"


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, stage) "
        '(rate(bark_stage_duration_seconds_bucket{stage!="x"}[5m])))'
        " / on (pod) group_left() max(bark_queue_capacity) or vector(1e3) > bool 0.5 unless up offset 5m"
    )
    assert catalog.metric_names(expr) == {"bark_stage_duration_seconds_bucket", "bark_queue_capacity", "up"}


def test_every_metric_on_the_dashboard_is_exported() -> None:
    for where, expr in targets():
        names = catalog.metric_names(substitute(expr))
        assert names, f"{where}: no metric in {expr!r}"
        unknown = {name for name in names if not catalog.is_known(name)}
        assert not unknown, f"{where}: {sorted(unknown)} is exported by nothing (see model_server/metrics.py)"


def test_every_server_and_sidecar_metric_has_a_panel() -> None:
    used = {name for _, expr in targets() for name in catalog.metric_names(substitute(expr))}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    for family, kind in {**catalog.server_families(), **catalog.sidecar_families()}.items():
        name = f"{family}_total" if kind == "counter" else family
        assert name in shown, f"{name} is exported but shown on no panel"


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    # A rules file of recording rules is the one input `promtool` parses PromQL from offline.
    rules = [
        {"record": f"dashboard:panel_{index}", "expr": substitute(expr)} for index, (_, expr) in enumerate(targets())
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize(("where", "expr"), targets(), ids=[where for where, _ in targets()])
def test_expression_runs_on_prometheus_and_returns_data(where: str, expr: str, traffic: Prometheus) -> None:
    result = traffic.query(substitute(expr))  # raises with Prometheus' message if it is refused
    if catalog.metric_names(substitute(expr)) & MAY_BE_EMPTY:
        return
    assert result, f"{where}: no data for {substitute(expr)!r}"
    # After the `traffic` fixture's requests, every rate and quantile has a real number to show.
    values = [float(series["value"][1]) for series in result]
    assert all(math.isfinite(value) for value in values), f"{where}: {values} for {substitute(expr)!r}"


def test_template_variables_find_the_scraped_target(traffic: Prometheus) -> None:
    variables = [v for v in load_dashboard()["templating"]["list"] if v["type"] == "query"]
    assert variables
    for variable in variables:
        query = variable["definition"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"${variable['name']}: expected label_values(selector, label), got {query!r}"
        selector, label = substitute(match.group(1)), match.group(2)
        assert catalog.is_known(catalog.metric_names(selector).pop()), query
        assert TARGET_LABELS[label] in traffic.label_values(label, selector), query
