"""One job end to end against the real model server (tiny checkpoint): the webhook gets real audio, and
the model server tracked the call under the job's id (the progress the job status shows)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from tests.serving import RunningServer
from tests.sidecar.harness import SECRET, Receiver, fast_settings, in_process_sidecar, wait_for
from webhook_sidecar.signing import verify


def test_a_job_on_the_real_model_delivers_decodable_wav(
    server: RunningServer, receiver: Receiver, tmp_path: Path
) -> None:
    settings = fast_settings(
        db_path=tmp_path / "jobs.sqlite3", model_url=f"{server.url}/v1/models/bark:predict", progress_poll_s=0.05
    )
    with in_process_sidecar(settings) as sidecar, sidecar.client() as client:
        response = client.post(
            "/async_predict",
            json={
                "model_input": {"prompt": "Hello there. How are you?", "seed": 7},
                "webhook_endpoint": receiver.url,
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        status = sidecar.wait_state(job_id, "delivered", "dead", timeout_s=120)
    assert status["state"] == "delivered" and status["outcome"] == "succeeded", status
    (delivery,) = receiver.deliveries
    verify(SECRET, delivery.headers, delivery.body)
    event = delivery.event()
    assert event["type"] == "com.barkkserve.tts.completed"
    data = event["data"]
    samples, rate = sf.read(io.BytesIO(base64.b64decode(data["audio"])))
    assert rate == data["sample_rate"] == 24_000
    assert abs(len(samples) / rate - data["duration_s"]) < 1e-3
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0
    chunks = data["chunks"]
    assert status["progress"] == {"chunks_done": chunks, "chunks_total": chunks}
    # The model server knows the call by the job id (kept a minute after it finished).
    progress = httpx.get(f"{server.url}/v1/requests/{job_id}/progress", timeout=10)
    assert progress.status_code == 200, progress.text
    assert progress.json()["chunks_done"] == progress.json()["chunks_total"] == chunks and progress.json()["finished"]


def test_cancelling_a_running_job_stops_the_model_servers_work(
    server: RunningServer, receiver: Receiver, tmp_path: Path
) -> None:
    """End to end: the sidecar aborts its call and the model server drops the chunks not yet made."""
    settings = fast_settings(
        db_path=tmp_path / "jobs.sqlite3",
        model_url=f"{server.url}/v1/models/bark:predict",
        progress_poll_s=0.05,
        cancel_poll_s=0.05,
    )
    text = " ".join(f"Sentence number {index} is here." for index in range(40))
    with in_process_sidecar(settings) as sidecar, sidecar.client() as client:
        response = client.post(
            "/async_predict",
            json={"model_input": {"prompt": text, "batch_chunk_size": 3}, "webhook_endpoint": receiver.url},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        running = wait_for(
            lambda: (job := sidecar.job(job_id))["progress"] and job, timeout_s=60, what="the job's first progress"
        )
        assert running["state"] == "running"
        cancel = client.delete(f"/jobs/{job_id}")
        assert cancel.status_code in (200, 202), cancel.text
        status = sidecar.wait_state(job_id, "cancelled", timeout_s=30)
    assert status["progress"]["chunks_done"] < status["progress"]["chunks_total"]

    def settled() -> dict[str, object] | None:
        answer = httpx.get(f"{server.url}/v1/requests/{job_id}/progress", timeout=10).json()
        return answer if answer["finished"] else None

    # The model server's count ends short of the text: its queued chunks were dropped, not generated.
    final = wait_for(settled, timeout_s=30, what="the model server to drop the cancelled request's chunks")
    assert final["chunks_done"] < final["chunks_total"], final
    assert receiver.deliveries == [], "a cancelled job is never delivered"
