"""One job end to end against the real model server (tiny checkpoint): the webhook gets real audio, and
the model server tracked the call under the job's id (the progress the job status shows)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import webvtt

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


def test_a_dialogue_job_keeps_its_segments_and_serves_its_captions(
    server: RunningServer, receiver: Receiver, tmp_path: Path
) -> None:
    """Issue #24 through the sidecar: turns and timestamps are fields like any other; the delivered result
    keeps the segments, and `GET /jobs/{id}/captions` serves the WebVTT the model made, which a standard
    parser reads back as the segments."""
    settings = fast_settings(db_path=tmp_path / "jobs.sqlite3", model_url=f"{server.url}/v1/models/bark:predict")
    model_input = {
        "turns": [
            {"voice": "v2/en_speaker_1", "text": "Hello there. How are you?"},
            {"voice": "v2/en_speaker_6", "text": "Fine, thank you."},
        ],
        "timestamps": True,
        "captions": "vtt",
        "seed": 3,
    }
    with in_process_sidecar(settings) as sidecar, sidecar.client() as client:
        response = client.post("/async_predict", json={"model_input": model_input, "webhook_endpoint": receiver.url})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        status = sidecar.wait_state(job_id, "delivered", "dead", timeout_s=120)
        captions = client.get(f"/jobs/{job_id}/captions")
        other = client.post(
            "/async_predict", json={"model_input": {"prompt": "No captions here."}, "webhook_endpoint": receiver.url}
        ).json()["job_id"]
        sidecar.wait_state(other, "delivered", "dead", timeout_s=120)
        none = client.get(f"/jobs/{other}/captions")
        unknown = client.get("/jobs/no-such-job/captions")
    assert status["outcome"] == "succeeded", status
    data = receiver.deliveries[0].event()["data"]
    segments = data["segments"]
    assert [segment["turn"] for segment in segments] == [0, 0, 1]
    assert [segment["voice"] for segment in segments] == ["v2/en_speaker_1"] * 2 + ["v2/en_speaker_6"]
    assert data["captions"].startswith("WEBVTT")
    assert captions.status_code == 200 and captions.headers["content-type"].startswith("text/vtt")
    assert captions.text == data["captions"]
    cues = webvtt.from_buffer(io.StringIO(captions.text))
    assert [cue.text.split(">", 1)[-1].removesuffix("</v>") for cue in cues] == [s["text"] for s in segments]
    assert none.status_code == 404 and "no captions" in none.json()["error"]
    assert unknown.status_code == 404
