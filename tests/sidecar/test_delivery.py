"""Delivery: a signed structured CloudEvent per job; retried on 5xx/408/429/timeouts/outages; 4xx final."""

from __future__ import annotations

import base64
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from cloudevents.http import from_http

from tests.serving import free_port
from tests.sidecar.harness import (
    SAMPLE_RATE,
    SECRET,
    FakeModel,
    InProcessSidecar,
    Receiver,
    ThreadedUvicorn,
    decode_wav,
    job_body,
    samples_for,
    wait_for,
    wav_for,
)
from webhook_sidecar.signing import InvalidSignature, verify


def submit(sidecar: InProcessSidecar, body: dict[str, Any]) -> str:
    with sidecar.client() as client:
        response = client.post("/async_predict", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def test_the_result_is_a_signed_structured_cloudevent_carrying_the_audio(
    sidecar: InProcessSidecar, receiver: Receiver
) -> None:
    job_id = submit(sidecar, job_body(receiver, "Deliver me."))
    status = sidecar.wait_state(job_id, "delivered")
    (delivery,) = receiver.deliveries
    assert delivery.headers["content-type"] == "application/cloudevents+json"
    assert delivery.webhook_id == job_id
    verify(SECRET, delivery.headers, delivery.body)
    event = from_http(delivery.headers, delivery.body)
    assert event["type"] == "com.barkkserve.tts.completed"
    assert event["id"] == event["subject"] == job_id
    data = event.get_data()
    samples, rate = decode_wav(base64.b64decode(data["audio"]))
    assert rate == data["sample_rate"] == SAMPLE_RATE
    assert np.array_equal(samples, samples_for("Deliver me."))
    assert status["outcome"] == "succeeded" and status["delivery_attempts"] == 1
    assert status["last_status_code"] == 200 and status["delivered_at"] is not None
    assert "audio" not in str(sidecar.job(job_id)), "the status never shows the audio"


def test_a_tampered_delivery_fails_verification(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    sidecar.wait_state(submit(sidecar, job_body(receiver)), "delivered")
    (delivery,) = receiver.deliveries
    with pytest.raises(InvalidSignature):
        verify(SECRET, delivery.headers, delivery.body.replace(b'"format": "wav"', b'"format": "mp3"'))
    with pytest.raises(InvalidSignature):
        verify("whsec_" + base64.b64encode(b"another key").decode(), delivery.headers, delivery.body)


def test_500s_and_timeouts_are_retried_with_the_same_message(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(delivery_timeout_s=0.3)
    receiver.hang_s = 1.0
    receiver.script.extend([500, "hang", 503])
    job_id = submit(sidecar, job_body(receiver))
    status = sidecar.wait_state(job_id, "delivered")
    assert status["delivery_attempts"] == 4 and status["last_status_code"] == 200
    assert [d.status for d in receiver.deliveries] == [500, 599, 503, 200]
    assert {d.webhook_id for d in receiver.deliveries} == {job_id}
    assert len({d.body for d in receiver.deliveries}) == 1, "retries resend the same message"
    for delivery in receiver.deliveries:
        verify(SECRET, delivery.headers, delivery.body)


def test_408_and_429_are_retried(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    receiver.script.extend([408, 429])
    status = sidecar.wait_state(submit(sidecar, job_body(receiver)), "delivered")
    assert status["delivery_attempts"] == 3


@pytest.mark.parametrize("code", [400, 404, 410, 301])
def test_other_4xx_and_redirects_are_final_and_the_job_is_dead(
    sidecar: InProcessSidecar, receiver: Receiver, code: int
) -> None:
    receiver.script.append(code)
    status = sidecar.wait_state(submit(sidecar, job_body(receiver)), "dead")
    assert status["delivery_attempts"] == 1 and status["last_status_code"] == code
    assert f"webhook answered {code}" in status["last_error"] and "final" in status["last_error"]
    assert receiver.count() == 1


def test_a_receiver_failing_past_max_attempts_leaves_the_job_dead(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(max_attempts=3)
    receiver.script.extend([500, 502, 503, 200])
    status = sidecar.wait_state(submit(sidecar, job_body(receiver)), "dead")
    assert status["delivery_attempts"] == 3 and "gave up after 3 attempts" in status["last_error"]
    assert receiver.count() == 3


def test_a_receiver_that_is_down_gets_the_result_when_it_comes_back(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(max_attempts=50)
    receiver.down()
    job_id = submit(sidecar, job_body(receiver, "Later."))
    # Seen between attempts (not in flight): failed attempts, and the next one scheduled.
    down = wait_for(
        lambda: (job := sidecar.job(job_id))["delivery_attempts"] >= 3 and job["next_attempt_at"] and job,
        15,
        "failed delivery attempts",
    )
    assert down["state"] == "delivering" and "unreachable" in down["last_error"]
    receiver.up()
    status = sidecar.wait_state(job_id, "delivered")
    assert status["delivery_attempts"] > 3
    (delivery,) = receiver.deliveries
    assert np.array_equal(decode_wav(base64.b64decode(delivery.event()["data"]["audio"]))[0], samples_for("Later."))


def test_a_model_400_is_delivered_as_a_failed_event_with_its_message(
    sidecar: InProcessSidecar, receiver: Receiver, fake_model: FakeModel
) -> None:
    message = "instances[0].prompt: 30000 characters is over the limit of 20000 (max_prompt_chars)"
    fake_model.script.append((400, {"error": message}, {}))
    job_id = submit(sidecar, job_body(receiver))
    status = sidecar.wait_state(job_id, "delivered")
    assert status["outcome"] == "failed" and status["attempts"] == 1 and status["error"] == message
    event = receiver.deliveries[0].event()
    assert event["type"] == "com.barkkserve.tts.failed"
    assert event["data"] == {"error": message, "status_code": 400}


def test_model_503s_hand_the_job_back_without_counting_attempts(
    sidecar: InProcessSidecar, receiver: Receiver, fake_model: FakeModel
) -> None:
    busy = (503, {"error": "queue full"}, {"Retry-After": "0"})
    fake_model.script.extend([busy, busy, busy])
    job_id = submit(sidecar, job_body(receiver))
    status = sidecar.wait_state(job_id, "delivered")
    assert status["outcome"] == "succeeded" and status["attempts"] == 1
    assert len(fake_model.prompts) == 4
    assert sidecar.app.state.service.store.get(job_id).handbacks == 3, "each 503 handed the job back"


def test_model_500s_are_retried_and_counted(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, fake_model: FakeModel
) -> None:
    sidecar = make_sidecar(max_attempts=2)
    boom = (500, {"error": "CUDA error"}, {})
    fake_model.script.append(boom)
    assert sidecar.wait_state(submit(sidecar, job_body(receiver, "one")), "delivered")["attempts"] == 2
    fake_model.script.extend([boom, boom])
    status = sidecar.wait_state(submit(sidecar, job_body(receiver, "two")), "delivered")
    assert status["outcome"] == "failed" and "gave up after 2 attempts" in status["error"]
    assert receiver.deliveries[-1].event()["data"]["status_code"] == 500


def test_a_model_that_does_not_answer_in_time_fails_the_job(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, fake_model: FakeModel
) -> None:
    sidecar = make_sidecar(job_timeout_s=0.5)
    fake_model.gate.clear()
    status = sidecar.wait_state(submit(sidecar, job_body(receiver)), "delivered")
    assert status["outcome"] == "failed" and "job timeout" in status["error"]
    assert receiver.deliveries[0].event()["type"] == "com.barkkserve.tts.failed"


def test_a_model_that_is_not_up_yet_gets_no_job_until_it_is_ready(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, fake_model: FakeModel
) -> None:
    port = free_port()
    sidecar = make_sidecar(model_url=f"http://127.0.0.1:{port}/v1/models/bark:predict")
    job_id = submit(sidecar, job_body(receiver, "Patience."))
    time.sleep(0.5)  # several claim rounds at the 0.05 s poll interval
    waiting = sidecar.job(job_id)
    assert waiting["state"] == "queued" and waiting["attempts"] == 0 and waiting["started_at"] is None
    fake_model.ready_status = 503  # listening, still loading: no claims either
    late_model = ThreadedUvicorn(fake_model.app(), port)
    late_model.start()
    try:
        time.sleep(0.5)
        assert sidecar.job(job_id)["state"] == "queued" and fake_model.prompts == []
        fake_model.ready_status = 200
        status = sidecar.wait_state(job_id, "delivered")
    finally:
        late_model.stop()
    assert status["outcome"] == "succeeded" and status["attempts"] == 1


def test_large_audio_is_delivered_as_an_expiring_download_link(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(inline_audio_max_bytes=10)
    job_id = submit(sidecar, job_body(receiver, "Big."))
    sidecar.wait_state(job_id, "delivered")
    data = receiver.deliveries[0].event()["data"]
    assert "audio" not in data and data["audio_bytes"] == len(wav_for("Big."))
    assert data["audio_url"].startswith(f"{sidecar.url}/downloads/") and data["audio_url_expires_at"]
    download = httpx.get(data["audio_url"])
    assert download.status_code == 200 and download.headers["content-type"] == "audio/wav"
    assert download.content == wav_for("Big.")
    assert httpx.get(f"{sidecar.url}/downloads/not-a-token").status_code == 404
    with sqlite3.connect(sidecar.settings.db_path) as db:
        db.execute("UPDATE jobs SET download_expires_at = 0 WHERE id = ?", (job_id,))
    assert httpx.get(data["audio_url"]).status_code == 410


def test_the_address_is_checked_again_at_delivery(
    sidecar: InProcessSidecar, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS that answered a public address at intake and the metadata address later gets nothing."""
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34", "169.254.169.254"])

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    job_id = submit(sidecar, {"model_input": {"prompt": "hi"}, "webhook_endpoint": "http://rebind.test/hook"})
    status = sidecar.wait_state(job_id, "dead")
    assert "refused at delivery" in status["last_error"] and "metadata" in status["last_error"]
    assert status["last_status_code"] is None
