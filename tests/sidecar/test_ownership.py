"""Jobs belong to the key that created them; intake is bounded (the model's limits, caps on unfinished jobs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bark_common.errors import InvalidInput
from model_server.config import Settings as ModelSettings
from tests.sidecar.harness import FakeModel, InProcessSidecar, Receiver, job_body, wait_for
from webhook_sidecar.limits import IntakeLimits
from webhook_sidecar.signing import verify

ALICE, BOB, ADMIN = {"x-api-key": "alice"}, {"x-api-key": "bob"}, {"x-api-key": "root"}
NOT_FOUND = {"error": "no job with this id"}


def post(sidecar: InProcessSidecar, body: dict[str, Any], **headers: str) -> httpx.Response:
    with sidecar.client() as client:
        return client.post("/async_predict", json=body, headers=headers)


def test_key_b_gets_404_for_key_as_job_on_every_route_and_an_admin_key_sees_it(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, fake_model: FakeModel
) -> None:
    sidecar = make_sidecar(api_keys="alice,bob", admin_api_keys="root", inline_audio_max_bytes=0)
    body = job_body(receiver, "Alice's words.")
    accepted = post(sidecar, body, **ALICE, **{"Idempotency-Key": "order-1"})
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    sidecar.wait_state(job_id, "delivered", **ALICE)
    link = httpx.URL(receiver.acknowledged()[0].event()["data"]["audio_url"]).path

    with sidecar.client() as client:
        assert client.get(f"/jobs/{job_id}", headers=BOB).json() == NOT_FOUND
        assert client.get(f"/jobs/{job_id}", headers=BOB).status_code == 404
        assert client.delete(f"/jobs/{job_id}", headers=BOB).status_code == 404
        assert client.get(link, headers=BOB).status_code == 404
        assert client.get(link, headers=ALICE).status_code == 200
        assert client.get(link).status_code == 200, "the token alone serves a receiver, which holds no key"
        assert client.get(f"/jobs/{job_id}", headers=ALICE).status_code == 200
        assert client.get(f"/jobs/{job_id}", headers=ADMIN).status_code == 200
    replay = post(sidecar, body, **BOB, **{"Idempotency-Key": "order-1"})
    assert replay.status_code == 202 and replay.json()["job_id"] != job_id, "Bob's key names his own job"
    assert "idempotent-replayed" not in replay.headers


def test_another_key_cannot_cancel_a_running_job(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, fake_model: FakeModel
) -> None:
    sidecar = make_sidecar(api_keys="alice,bob")
    fake_model.gate.clear()
    job_id = post(sidecar, job_body(receiver, "Keep running."), **ALICE).json()["job_id"]
    wait_for(lambda: fake_model.in_flight == 1, 10, "the job to run")
    with sidecar.client() as client:
        assert client.delete(f"/jobs/{job_id}", headers=BOB).status_code == 404
        assert sidecar.job(job_id, **ALICE)["cancel_requested"] is False
        assert client.delete(f"/jobs/{job_id}", headers=ALICE).status_code == 202
    sidecar.wait_state(job_id, "cancelled", **ALICE)


def test_a_prompt_over_the_models_limit_is_a_400_at_intake(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, fake_model: FakeModel
) -> None:
    sidecar = make_sidecar()
    refused = post(sidecar, job_body(receiver, "a" * 20_001))  # the model server's default max_prompt_chars
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "model_input.prompt: 20001 characters is over the limit of 20000 (max_prompt_chars)"
    }
    assert post(sidecar, job_body(receiver, "a " * 100)).status_code == 202


def test_a_job_whose_estimated_audio_is_over_the_models_limit_is_a_400(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BARK_MAX_OUTPUT_SECONDS", "10")  # the model server's own setting, read by the sidecar
    sidecar = make_sidecar()
    long = " ".join(["Words to say."] * 20)  # 60 words: about 24 s of speech
    refused = post(sidecar, job_body(receiver, long))
    assert refused.status_code == 400
    assert "over the limit of 10 s (max_output_seconds)" in refused.json()["error"]
    assert refused.json()["error"].startswith("model_input: request may produce up to")
    assert post(sidecar, job_body(receiver, "Short.")).status_code == 202


def test_turns_count_together_against_the_limits() -> None:
    limits = IntakeLimits.from_environment()
    turns = [{"voice": "v2/en_speaker_1", "text": "b" * 12_000}, {"voice": "v2/de_speaker_3", "text": "c" * 9_000}]
    with pytest.raises(InvalidInput) as error:
        limits.check({"turns": turns})
    assert (
        str(error.value) == "model_input.turns: 21000 characters in total is over the limit of 20000 (max_prompt_chars)"
    )
    limits.check({"turns": turns[:1]})
    short = IntakeLimits(ModelSettings.model_validate({"max_output_seconds": 10}))
    fifteen_words = " ".join(["Three more words."] * 5)  # 6 s of speech: under 10 s alone, over it twice
    two = [{"voice": "v2/en_speaker_1", "text": fifteen_words}, {"voice": "v2/fr_speaker_2", "text": fifteen_words}]
    short.check({"turns": two[:1]})
    with pytest.raises(InvalidInput, match=r"over the limit of 10 s \(max_output_seconds\)"):
        short.check({"turns": two})


def test_a_caller_over_the_queue_cap_gets_a_429_with_retry_after(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, fake_model: FakeModel
) -> None:
    sidecar = make_sidecar(api_keys="alice,bob", max_queued_per_key=2, max_queued_total=3, concurrency=1)
    fake_model.gate.clear()  # nothing finishes: every job stays queued or running
    first = post(sidecar, job_body(receiver, "One."), **ALICE, **{"Idempotency-Key": "1"})
    assert post(sidecar, job_body(receiver, "Two."), **ALICE).status_code == 202
    over = post(sidecar, job_body(receiver, "Three."), **ALICE)
    assert over.status_code == 429 and over.headers["retry-after"] == "30"
    assert over.json() == {"error": "too many unfinished jobs: 2 unfinished jobs for this API key; retry later"}
    replay = post(sidecar, job_body(receiver, "One."), **ALICE, **{"Idempotency-Key": "1"})
    assert replay.status_code == 202 and replay.json()["job_id"] == first.json()["job_id"], "a replay is no new job"
    assert post(sidecar, job_body(receiver, "Bob's."), **BOB).status_code == 202
    full = post(sidecar, job_body(receiver, "Bob's second."), **BOB)
    assert full.status_code == 429 and "3 unfinished jobs in all" in full.json()["error"]
    fake_model.gate.set()
    sidecar.wait_state(first.json()["job_id"], "delivered", **ALICE)
    wait_for(lambda: post(sidecar, job_body(receiver, "Later."), **ALICE).status_code == 202, 15, "room again")


def test_two_webhook_secrets_sign_every_delivery_and_either_verifies(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    new, old = "whsec_" + "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQh", "old-raw-secret"
    sidecar = make_sidecar(webhook_secret=f"{new} {old}")
    job_id = post(sidecar, job_body(receiver, "Rotating.")).json()["job_id"]
    sidecar.wait_state(job_id, "delivered")
    (delivery,) = receiver.acknowledged()
    assert len(delivery.headers["webhook-signature"].split()) == 2
    for secret in (new, old):
        verify(secret, delivery.headers, delivery.body)
