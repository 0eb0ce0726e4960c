"""Fixtures for the observability tests: one real Prometheus scraping the session's test server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.prom import Prometheus, running_prometheus
from tests.serving import RunningServer

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "bark-tts"
RULES_FILE = CHART / "rules" / "bark-tts.rules.yaml"
RULES_TESTS = CHART / "rules" / "tests" / "bark-tts.rules.test.yaml"
DASHBOARD = CHART / "dashboards" / "bark-tts.json"
PREDICT = "/v1/models/bark:predict"


@pytest.fixture(scope="session")
def prometheus(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping the test server every second, with the chart's rules loaded.

    Loading the rules makes Prometheus itself evaluate them against real scraped series.
    """
    target = server.url.removeprefix("http://")
    with running_prometheus(target, tmp_path_factory.mktemp("prometheus"), [RULES_FILE]) as running:
        yield running


@pytest.fixture(scope="session")
def traffic(server: RunningServer, prometheus: Prometheus) -> Prometheus:
    """Good and bad requests in two rounds with a scrape between, then two scrapes more.

    A series born during the first round starts at its first value, which `rate()` does not count;
    the second round makes every rate over the window positive, whatever ran before.
    """
    for _ in range(2):
        with server.client() as client:
            ok = client.post(PREDICT, json={"instances": [{"prompt": "Traffic for the dashboard. Two parts."}]})
            bad = client.post(PREDICT, json={"instances": [{"prompt": "Hi.", "voice": "no/such_voice"}]})
        assert (ok.status_code, bad.status_code) == (200, 400), (ok.text, bad.text)
        prometheus.wait_for_scrapes(after=time.time())
    prometheus.wait_for_scrapes(after=time.time())
    return prometheus
