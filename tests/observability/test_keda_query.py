"""The chart's KEDA Prometheus query, evaluated by a real Prometheus scraping the running server.

Prometheus labels the server's series as Kubernetes would label a pod of KServe's RawDeployment
`bark-tts-predictor` in the release namespace. Two waves of requests, the second twice the first,
each more chunks than the server generates at once (so chunks wait in its queue): the query must
rise with each wave, past the rows, as far as the chunks sent, and fall back to 0 when they are
done. KEDA divides the value by chunksPerPod to decide how many pods to run.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from tests.observability.conftest import CHART, PREDICT
from tests.observability.prom import Prometheus, require_tool, running_prometheus
from tests.serving import RunningServer

#: How a RawDeployment predictor pod of release bark-tts in namespace default is labelled.
POD_LABELS = {"namespace": "default", "pod": "bark-tts-predictor-5d8f7c9b4-x7k2q"}
ROWS = 32  # the server's max_batch_size (BARK_MAX_BATCH_SIZE default): chunks generated at once
# 10 words, one chunk each: long enough on the tiny model that every wave outlasts a few scrapes
# before its first chunk is done.
SENTENCE = "The quiet harbour woke up slowly under a pale sky."
CHUNKS_PER_REQUEST = 4


def keda_query() -> tuple[str, int]:
    """The Prometheus trigger's query and threshold, from the chart's KEDA render."""
    helm = require_tool("helm", install="`bash scripts/install-tools.sh`")
    values = CHART / "ci" / "keda-values.yaml"
    rendered = subprocess.run(
        # Offline (no cluster to keep the generated secrets in): the chart is told to make them up.
        [helm, "template", "bark-tts", str(CHART), "--namespace", "default", "-f", str(values),
         "--set", "secrets.generateWithoutCluster=true"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    (scaled,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "ScaledObject"]
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    return trigger["metadata"]["query"], int(trigger["metadata"]["threshold"])


@pytest.fixture(scope="module")
def pod_prometheus(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    target = server.url.removeprefix("http://")
    with running_prometheus(target, tmp_path_factory.mktemp("keda-prometheus"), [], labels=POD_LABELS) as running:
        running.wait_for_scrapes(after=time.time())
        yield running


def one_request(server: RunningServer) -> None:
    body = {"instances": [{"prompt": " ".join([SENTENCE] * CHUNKS_PER_REQUEST), "batch_chunk_size": 10}]}
    with httpx.Client(base_url=server.url, timeout=300) as client:
        response = client.post(PREDICT, json=body)
    assert response.status_code == 200, response.text


def peak_during(prometheus: Prometheus, query: str, server: RunningServer, requests: int) -> float:
    """Send `requests` at once; the highest value the query had while they ran (polled every 0.25 s)."""
    peak = 0.0
    with ThreadPoolExecutor(max_workers=requests) as pool:
        futures = [pool.submit(one_request, server) for _ in range(requests)]
        while not all(future.done() for future in futures):
            (sample,) = prometheus.query(query) or [{"value": [0, "0"]}]
            peak = max(peak, float(sample["value"][1]))
            time.sleep(0.25)
        for future in futures:
            future.result()
    return peak


def test_the_keda_query_rises_with_the_queue_and_returns_to_zero(
    server: RunningServer, pod_prometheus: Prometheus
) -> None:
    query, chunks_per_pod = keda_query()
    assert pod_prometheus.value(query) == 0  # idle: nothing waiting, nothing generating

    small, large = 10, 20  # 40 and 80 chunks, both beyond the 32 rows
    small_peak = peak_during(pod_prometheus, query, server, small)
    pod_prometheus.wait_for_scrapes(after=time.time())
    assert pod_prometheus.value(query) == 0  # done: the query falls back, KEDA may scale in
    large_peak = peak_during(pod_prometheus, query, server, large)

    # Past the rows: chunks waiting in the queue count too, and never more than were sent.
    assert ROWS < small_peak <= small * CHUNKS_PER_REQUEST
    assert small_peak < large_peak <= large * CHUNKS_PER_REQUEST
    # The queue did fill (the server's own gauge, as Prometheus scraped it).
    assert pod_prometheus.value(f"max_over_time(bark_queue_depth{{pod='{POD_LABELS['pod']}'}}[5m])") > 0
    # What KEDA makes of it: more than one pod wanted for the large wave at the default threshold.
    assert large_peak / chunks_per_pod > 1
    pod_prometheus.wait_for_scrapes(after=time.time())
    assert pod_prometheus.value(query) == 0
