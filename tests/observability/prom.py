"""A real Prometheus for tests: find the binaries, run one that scrapes the test server, query it.

Prometheus and promtool come from Debian's `prometheus` package (`scripts/install-tools.sh` in CI).
Without them these tests skip locally but fail when `CI` is set, so CI never goes green by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.serving import REPO_ROOT as REPO
from tests.serving import free_port, stop_process

#: Scrape and rule evaluation period of the test Prometheus: short, so tests wait seconds, not minutes.
SCRAPE_INTERVAL_S = 1.0
JOB = "bark-tts"
#: Target labels the test Prometheus attaches, as a ServiceMonitor/PodMonitor would in Kubernetes;
#: the dashboard's `$namespace` / `$pod` variables select on them.
TARGET_LABELS = {"namespace": "bark-test", "pod": "bark-tts-predictor-0"}


def require_tool(name: str, install: str = "`apt-get install prometheus`") -> str:
    """Path to `name` (PATH, the repo's .tools/bin, then /usr/bin); fail under CI, skip locally when missing."""
    search = os.pathsep.join([os.environ.get("PATH", ""), str(REPO / ".tools" / "bin"), "/usr/bin"])
    path = shutil.which(name, path=search)
    if path is None:
        message = f"{name} missing: {install} (CI: bash scripts/install-tools.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


class QueryError(AssertionError):
    """Prometheus refused a query (bad PromQL, unknown function, ...)."""


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at now; the result vector (or raises QueryError with Prometheus' message)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise QueryError(f"{expr!r}: {response.status_code} {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float:
        """The single value of an expression that must yield exactly one series."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr!r}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def label_values(self, label: str, match: str) -> list[str]:
        response = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise QueryError(f"label {label} of {match!r}: {body.get('error')}")
        return list(body["data"])

    def query_rules(self) -> list[dict[str, Any]]:
        """The rule groups Prometheus loaded, each rule with its evaluation `health` and `lastError`."""
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        assert body.get("status") == "success", body
        return list(body["data"]["groups"])

    def last_scrape(self) -> float:
        """Unix time of the latest scrape of the test server (0 before the first one)."""
        result = self.query(f'timestamp(up{{job="{JOB}"}})')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for_scrapes(self, after: float, count: int = 1, timeout_s: float = 30.0) -> None:
        """Block until `count` scrapes have started after unix time `after` (so they saw everything before).

        A scrape's timestamp is when it started; one that started after our last response reads
        counters that already include that request.
        """
        deadline = time.monotonic() + timeout_s
        seen = 0
        mark = after
        while time.monotonic() < deadline:
            scraped = self.last_scrape()
            if scraped > mark:
                seen += 1
                mark = scraped
                if seen >= count:
                    return
            time.sleep(SCRAPE_INTERVAL_S / 4)
        raise TimeoutError(f"Prometheus did not scrape {count}x after {after} within {timeout_s} s:\n{self.log()}")

    def wait_until(self, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll until `expr` returns a non-empty vector (recording rules lag a scrape behind)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(SCRAPE_INTERVAL_S / 2)
        raise TimeoutError(f"{expr!r} stayed empty for {timeout_s} s")


def write_config(folder: Path, target: str, rule_files: list[Path], labels: dict[str, str] = TARGET_LABELS) -> Path:
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S:g}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S:g}s",
        },
        "rule_files": [str(path.resolve()) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_timeout": f"{SCRAPE_INTERVAL_S:g}s",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target], "labels": labels}],
            }
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def running_prometheus(
    target: str,
    folder: Path,
    rule_files: list[Path],
    ready_timeout_s: float = 30.0,
    labels: dict[str, str] = TARGET_LABELS,
) -> Iterator[Prometheus]:
    """A Prometheus on a free loopback port scraping `target` (host:port) every second, its series
    labelled with `labels` as Kubernetes service discovery would."""
    binary = require_tool("prometheus")
    config = write_config(folder, target, rule_files, labels)
    port = free_port()
    log_path = folder / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=log_file, cwd=folder)
    prometheus = Prometheus(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_ready(prometheus, ready_timeout_s)
        yield prometheus
    finally:
        stop_process(process, grace_s=15)


def _wait_ready(prometheus: Prometheus, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prometheus.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {prometheus.process.returncode}:\n{prometheus.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"prometheus not ready after {timeout_s} s:\n{prometheus.log()}")


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server_url: str) -> Samples:
    """The server's /metrics as {(sample name, labels): value}, read directly (no Prometheus)."""
    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in samples.items() if sample == name and wanted <= sample_labels
    )
