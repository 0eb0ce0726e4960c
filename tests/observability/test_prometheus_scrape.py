"""A real Prometheus scrapes the running server and sees exactly the requests this test made.

The session server may have served other tests before, so each check compares Prometheus' value
with the server's own /metrics read just before our requests, plus what our requests add.
"""

from __future__ import annotations

import math
import time

from model_server.metrics import STAGES
from tests.observability.conftest import PREDICT
from tests.observability.prom import JOB, TARGET_LABELS, Prometheus, scrape, total
from tests.serving import RunningServer

GOOD_REQUESTS = 3
SELECT = f'job="{JOB}"'


def test_prometheus_sees_the_requests_we_made(server: RunningServer, prometheus: Prometheus) -> None:
    before = scrape(server.url)
    with server.client() as client:
        for index in range(GOOD_REQUESTS):
            response = client.post(PREDICT, json={"instances": [{"prompt": f"Request number {index}. Done."}]})
            assert response.status_code == 200, response.text
        bad = client.post(PREDICT, json={"instances": [{"prompt": "Hello.", "voice": "v9/xx_speaker_99"}]})
        assert bad.status_code == 400, bad.text
    prometheus.wait_for_scrapes(after=time.time())
    after = scrape(server.url)

    (target,) = prometheus.query(f"up{{{SELECT}}}")
    assert target["value"][1] == "1"
    assert TARGET_LABELS.items() <= target["metric"].items()

    # End-to-end latency and RTF: one observation per successful request, none for the 400.
    for histogram in ("bark_request_duration_seconds_count", "bark_real_time_factor_count"):
        expected = total(before, histogram, route="v1_predict") + GOOD_REQUESTS
        assert prometheus.value(f'{histogram}{{{SELECT}, route="v1_predict"}}') == expected, histogram

    # Outcomes: three 200s and exactly one 400 (invalid_input) more than before.
    for code, reason, added in (("200", "ok", GOOD_REQUESTS), ("400", "invalid_input", 1)):
        expected = total(before, "bark_requests_total", code=code, reason=reason) + added
        query = f'sum(bark_requests_total{{{SELECT}, code="{code}", reason="{reason}"}})'
        assert prometheus.value(query) == expected, code

    # Audio was produced, and Prometheus holds the same total as the server.
    audio = prometheus.value(f'bark_audio_seconds_total{{{SELECT}, route="v1_predict"}}')
    assert audio > total(before, "bark_audio_seconds_total", route="v1_predict") >= 0
    assert math.isclose(audio, total(after, "bark_audio_seconds_total", route="v1_predict"), rel_tol=1e-9)

    # Batches: at least one generate call, each timed once per model stage.
    batches = prometheus.value(f"bark_batch_size_count{{{SELECT}}}") - total(before, "bark_batch_size_count")
    assert 1 <= batches <= GOOD_REQUESTS
    for stage in STAGES:
        count = prometheus.value(f'bark_stage_duration_seconds_count{{{SELECT}, stage="{stage}"}}')
        observed = count - total(before, "bark_stage_duration_seconds_count", stage=stage)
        # split and encode run once per successful request; the model stages once per batch.
        assert observed == (GOOD_REQUESTS if stage in ("split", "encode") else batches), stage

    # The gauges are there and idle again: nothing queued or generating after the responses.
    assert prometheus.value(f"bark_queue_depth{{{SELECT}}}") == 0
    assert prometheus.value(f"bark_inflight_chunks{{{SELECT}}}") == 0
    assert prometheus.value(f"bark_queue_capacity{{{SELECT}}}") > 0
    assert prometheus.value(f"bark_model_load_seconds{{{SELECT}}}") > 0
    assert prometheus.value(f"count(bark_model_info{{{SELECT}}})") == 1
