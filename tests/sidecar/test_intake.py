"""Intake: `POST /async_predict` and CloudEvents (binary, structured) store the job, then answer 202."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http

from tests.sidecar.harness import FakeModel, InProcessSidecar, Receiver, job_body


def requested_event(
    body: dict, event_id: str = "evt-1", event_type: str = "com.barkkserve.tts.requested"
) -> CloudEvent:  # type: ignore[type-arg]
    return CloudEvent({"type": event_type, "source": "/tests/producer", "id": event_id}, body)


def test_async_predict_answers_202_with_an_unguessable_id_after_storing_the_job(
    sidecar: InProcessSidecar, receiver: Receiver, fake_model: FakeModel
) -> None:
    fake_model.gate.clear()  # the job must not move on before we look
    with sidecar.client() as client:
        response = client.post("/async_predict", json=job_body(receiver))
    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["job_id"]
    assert len(job_id) >= 22 and accepted["status_url"] == f"{sidecar.url}/jobs/{job_id}"
    assert response.headers["location"] == accepted["status_url"]
    # Read the file through a connection of our own: the row was committed before the answer.
    with sqlite3.connect(sidecar.settings.db_path) as db:
        row = db.execute("SELECT state, model_input FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None and row[0] in ("queued", "running")
    assert json.loads(row[1]) == {"prompt": "Hello there."}
    assert sidecar.job(job_id)["state"] in ("queued", "running")


def test_binary_mode_cloudevent_creates_a_job_and_the_reply_is_a_cloudevent(
    sidecar: InProcessSidecar, receiver: Receiver
) -> None:
    headers, body = to_binary(requested_event(job_body(receiver)))
    with sidecar.client() as client:
        response = client.post("/", headers=headers, content=body)
    assert response.status_code == 202, response.text
    reply = from_http(dict(response.headers), response.content)
    assert reply["type"] == "com.barkkserve.tts.accepted"
    job_id = reply.get_data()["job_id"]
    assert response.json() == {"job_id": job_id, "status_url": f"{sidecar.url}/jobs/{job_id}"}
    assert sidecar.wait_state(job_id, "delivered")["outcome"] == "succeeded"


def test_structured_mode_cloudevent_creates_a_job(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    headers, body = to_structured(requested_event(job_body(receiver, "Structured.")))
    assert headers["content-type"] == "application/cloudevents+json"
    with sidecar.client() as client:
        response = client.post("/", headers=headers, content=body)
    assert response.status_code == 202, response.text
    sidecar.wait_state(response.json()["job_id"], "delivered")
    assert receiver.acknowledged()[0].event()["data"]["format"] == "wav"


def test_a_redelivered_cloudevent_is_one_job_delivered_once(
    sidecar: InProcessSidecar, receiver: Receiver, fake_model: FakeModel
) -> None:
    headers, body = to_binary(requested_event(job_body(receiver), event_id="same"))
    with sidecar.client() as client:
        first = client.post("/", headers=headers, content=body).json()["job_id"]
        sidecar.wait_state(first, "delivered")
        second = client.post("/", headers=headers, content=body).json()["job_id"]
        other_id = client.post("/", headers={**headers, "ce-id": "other"}, content=body).json()["job_id"]
    assert first == second != other_id
    sidecar.wait_state(other_id, "delivered")
    assert sorted(d.webhook_id for d in receiver.deliveries) == sorted([first, other_id])
    assert fake_model.prompts.count("Hello there.") == 2


def test_the_same_idempotency_key_gives_the_same_job_and_one_delivery(
    sidecar: InProcessSidecar, receiver: Receiver, fake_model: FakeModel
) -> None:
    with sidecar.client() as client:
        first = client.post("/async_predict", json=job_body(receiver), headers={"Idempotency-Key": "k-1"})
        sidecar.wait_state(first.json()["job_id"], "delivered")
        again = client.post("/async_predict", json=job_body(receiver), headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(receiver.deliveries) == 1 and len(fake_model.prompts) == 1


def test_an_idempotency_key_reused_for_another_body_is_a_409(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    with sidecar.client() as client:
        assert (
            client.post("/async_predict", json=job_body(receiver), headers={"Idempotency-Key": "k"}).status_code == 202
        )
        response = client.post("/async_predict", json=job_body(receiver, "Other."), headers={"Idempotency-Key": "k"})
    assert response.status_code == 409 and "Idempotency-Key" in response.json()["error"]


def test_bad_model_input_is_a_400_naming_the_field(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    with sidecar.client() as client:
        wrong_type = client.post("/async_predict", json=job_body(receiver, voice=5))
        unknown = client.post("/async_predict", json=job_body(receiver, speed=2))
        missing = client.post(
            "/async_predict",
            json={"model_input": {"voice": "v2/en_speaker_1"}, "webhook_endpoint": receiver.url},
        )
        no_webhook = client.post("/async_predict", json={"model_input": {"prompt": "hi"}})
        not_json = client.post("/async_predict", content=b"{nope", headers={"content-type": "application/json"})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"].startswith("model_input.voice:")
    assert unknown.status_code == 400 and "model_input.speed" in unknown.json()["error"]
    assert missing.status_code == 400 and "model_input.prompt" in missing.json()["error"]
    assert no_webhook.status_code == 400 and no_webhook.json()["error"].startswith("webhook_endpoint:")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]


def test_webhook_urls_must_be_http_and_public(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(webhook_allowlist="")
    cases = {
        "ftp://example.com/hook": "http:// or https://",
        receiver.url: "loopback",
        "http://localhost:9/hook": "loopback",
        "http://10.0.0.8/hook": "private",
        "http://169.254.169.254/latest/meta-data/": "metadata",
    }
    with sidecar.client() as client:
        for url, reason in cases.items():
            response = client.post("/async_predict", json={"model_input": {"prompt": "hi"}, "webhook_endpoint": url})
            assert response.status_code == 400, url
            assert response.json()["error"].startswith("webhook_endpoint:") and reason in response.json()["error"]


def test_the_allowlist_does_not_open_the_metadata_address(sidecar: InProcessSidecar) -> None:
    with sidecar.client() as client:
        response = client.post(
            "/async_predict",
            json={"model_input": {"prompt": "hi"}, "webhook_endpoint": "http://169.254.169.254/"},
        )
    assert response.status_code == 400 and "metadata" in response.json()["error"]


def test_cloudevents_of_another_type_or_without_attributes_are_400s(
    sidecar: InProcessSidecar, receiver: Receiver
) -> None:
    headers, body = to_binary(requested_event(job_body(receiver), event_type="com.example.other"))
    with sidecar.client() as client:
        other_type = client.post("/", headers=headers, content=body)
        plain_json = client.post("/", json=job_body(receiver))
        bad_data_headers, bad_data = to_binary(requested_event({"model_input": {"prompt": 3}}))
        bad_data_response = client.post("/", headers=bad_data_headers, content=bad_data)
    assert other_type.status_code == 400 and "com.barkkserve.tts.requested" in other_type.json()["error"]
    assert plain_json.status_code == 400 and "not a CloudEvent" in plain_json.json()["error"]
    assert bad_data_response.status_code == 400 and "model_input.prompt" in bad_data_response.json()["error"]


def test_unknown_jobs_are_404s(sidecar: InProcessSidecar) -> None:
    with sidecar.client() as client:
        response = client.get("/jobs/not-a-job")
    assert response.status_code == 404 and response.json() == {"error": "no job with this id"}


def test_oversized_bodies_are_413s(sidecar: InProcessSidecar, receiver: Receiver) -> None:
    with sidecar.client() as client:
        response = client.post("/async_predict", json=job_body(receiver, "x" * (2 * 1024 * 1024)))
    assert response.status_code == 413


def test_health_and_readiness_are_open(sidecar: InProcessSidecar) -> None:
    with sidecar.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
