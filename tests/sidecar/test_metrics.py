"""`/metrics`: jobs by state (read from the store), transitions, delivery attempts and latency."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.sidecar.harness import InProcessSidecar, Receiver, job_body


def samples(sidecar: InProcessSidecar) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with sidecar.client() as client:
        text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_jobs_state_changes_and_delivery_attempts(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    receiver.script.append(500)
    with sidecar.client() as client:
        job_id = client.post("/async_predict", json=job_body(receiver)).json()["job_id"]
    sidecar.wait_state(job_id, "delivered")
    values = samples(sidecar)
    assert values[("bark_jobs", (("state", "delivered"), ("store", "sqlite")))] == 1
    assert values[("bark_jobs", (("state", "queued"), ("store", "sqlite")))] == 0
    for state, count in {"queued": 1, "running": 1, "succeeded": 1, "delivering": 1, "delivered": 1}.items():
        assert values[("bark_job_transitions_total", (("state", state),))] == count, state
    assert values[("bark_webhook_delivery_attempts_total", (("outcome", "retry"),))] == 1
    assert values[("bark_webhook_delivery_attempts_total", (("outcome", "delivered"),))] == 1
    assert values[("bark_webhook_delivery_attempts_total", (("outcome", "rejected"),))] == 0
    assert values[("bark_webhook_delivery_latency_seconds_count", ())] == 1
    assert values[("bark_webhook_delivery_latency_seconds_sum", ())] > 0


def test_job_status_shows_progress_but_never_the_audio(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    with sidecar.client() as client:
        job_id = client.post("/async_predict", json=job_body(receiver)).json()["job_id"]
    status = sidecar.wait_state(job_id, "delivered")
    assert set(status) == {
        "job_id", "state", "outcome", "error", "attempts", "delivery_attempts", "created_at", "started_at",
        "finished_at", "delivered_at", "next_attempt_at", "last_error", "last_status_code", "webhook_host",
        "progress", "cancel_requested",
    }  # fmt: skip
    assert status["webhook_host"] == "127.0.0.1" and status["attempts"] == 1
    assert status["progress"] == {"chunks_done": 1, "chunks_total": 1}
    assert status["created_at"] <= status["started_at"] <= status["finished_at"] <= status["delivered_at"]
    assert receiver.deliveries[0].event()["data"]["audio"] not in str(status)
