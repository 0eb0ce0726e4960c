"""The chart's Prometheus rules: promtool accepts them, their unit tests pass, and a real Prometheus
loads them next to the healthy test server without raising any alert."""

from __future__ import annotations

import re
import time
from typing import Any

import yaml

from tests.observability import catalog
from tests.observability.conftest import CHART, REPO, RULES_FILE, RULES_TESTS
from tests.observability.prom import Prometheus, promtool, scrape
from tests.serving import RunningServer

DOCS = REPO / "docs" / "OBSERVABILITY.md"


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULES_TESTS.name, cwd=RULES_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_issue_alerts_exist() -> None:
    names = {rule["alert"] for rule in alerts()}
    assert names >= {
        "BarkHighErrorRate",
        "BarkQueueSaturated",
        "BarkLatencyP95High",
        "BarkModelDown",
        "BarkWebhookDeliveriesFailing",
        "BarkQueueDeepAtMaxReplicas",
        "BarkJobsWaitingTooLong",
    }


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        case for test in yaml.safe_load(RULES_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])
    ]
    for alert in alerts():
        own = [case for case in cases if case["alertname"] == alert["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{alert['alert']}: no test where it fires"
        assert any(not case["exp_alerts"] for case in own), f"{alert['alert']}: no test where it stays quiet"


def test_every_alert_says_how_bad_it_is_and_links_its_runbook() -> None:
    headings = {line.lstrip("#").strip().lower() for line in DOCS.read_text().splitlines() if line.startswith("#")}
    for alert in alerts():
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/OBSERVABILITY.md" and anchor == alert["alert"].lower(), alert["alert"]
        assert anchor in headings, f"{alert['alert']}: no heading `{alert['alert']}` in {DOCS.name}"


def chart_recorded() -> set[str]:
    """Series the chart records from its settings (templates/prometheusrule-autoscaling.yaml)."""
    template = (CHART / "templates" / "prometheusrule-autoscaling.yaml").read_text()
    return set(re.findall(r"- record: (\S+)", template))


def test_rules_name_only_exported_metrics() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule} | chart_recorded()
    assert chart_recorded() == {
        "namespace:bark_autoscaling_max_replicas:config",
        "namespace:bark_autoscaling_chunks_per_pod:config",
    }
    for rule in rules():
        unknown = {name for name in catalog.metric_names(rule["expr"]) if not catalog.is_known(name)} - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)} is exported by nothing"


def test_the_chart_deploys_the_rules_file_but_not_its_unit_tests() -> None:
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    (pattern,) = re.findall(r'\.Files\.Glob "([^"]+)"', template)
    # Helm's glob, like pathlib's, does not let `*` cross a `/`.
    loaded = sorted(CHART.glob(pattern))
    assert RULES_FILE in loaded
    assert RULES_TESTS not in loaded
    for path in loaded:
        assert yaml.safe_load(path.read_text())["groups"], f"{path.name}: no rule groups"


def test_prometheus_loads_the_rules_and_the_healthy_server_raises_no_alert(
    server: RunningServer, traffic: Prometheus
) -> None:
    deadline = time.monotonic() + 30
    while True:
        groups = traffic.query_rules()
        evaluated = [rule for group in groups for rule in group["rules"]]
        if all(rule["health"] != "unknown" for rule in evaluated) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {rule["name"] for rule in evaluated} == {rule.get("alert") or rule["record"] for rule in rules()}
    for rule in evaluated:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

    # Recording rules turn the scraped series into values: a latency, an empty queue, an error ratio.
    assert traffic.wait_until('namespace:bark_request_duration_seconds:p95_rate5m{namespace="bark-test"} > 0')
    assert traffic.wait_until('pod:bark_queue_utilisation:ratio{pod="bark-tts-predictor-0"} == 0')
    (ratio,) = traffic.wait_until('namespace:bark_request_errors:ratio_rate5m{namespace="bark-test"}')
    # The session server is shared: another test file may have provoked 5xx on purpose. Only when it
    # never answered one must the ratio be exactly 0 and the error alert quiet.
    samples = scrape(server.url)
    server_errors = sum(
        value
        for (name, labels), value in samples.items()
        if name == "bark_requests_total" and dict(labels)["code"].startswith("5")
    )
    quiet = 'ALERTS{alertname!="BarkHighErrorRate"}'
    if server_errors == 0:
        assert float(ratio["value"][1]) == 0
        quiet = "ALERTS"
    # Neither pending nor firing: the rules do not cry wolf on a server that works.
    assert traffic.query(quiet) == []
