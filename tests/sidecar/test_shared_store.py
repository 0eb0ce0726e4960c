"""Several sidecars on one PostgreSQL store: a dead sidecar's jobs are taken over, none is lost or doubled.

Real `python -m webhook_sidecar` processes share a real PostgreSQL server (tests/sidecar/postgres.py);
the fake model and the receiver run in this process, and their gates freeze the sidecars with jobs
running or mid-delivery when a signal arrives. Leases are short here (2 s) to keep the tests quick.
"""

from __future__ import annotations

import base64
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.sidecar.harness import (
    SECRET,
    Delivery,
    FakeModel,
    InProcessSidecar,
    Receiver,
    SidecarProcess,
    job_body,
    prediction_for,
    process_env,
    sidecar_processes,
    submit,
    wait_for,
    wav_for,
)
from tests.sidecar.postgres import PostgresServer
from webhook_sidecar.signing import verify

LEASE_S = 2.0


@pytest.fixture
def start_sidecar(tmp_path: Path, fake_model: FakeModel, pg_url: str) -> Iterator[Callable[..., SidecarProcess]]:
    env = process_env(fake_model.predict_url, SIDECAR_DATABASE_URL=pg_url, SIDECAR_LEASE_S=str(LEASE_S))
    with sidecar_processes(tmp_path, env) as start:
        yield start


def states(pg_url: str) -> dict[str, str]:
    with psycopg.connect(pg_url) as conn:
        return dict(conn.execute("SELECT id, state FROM bark_jobs").fetchall())


def by_webhook_id(deliveries: list[Delivery]) -> dict[str, list[Delivery]]:
    grouped: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        grouped[delivery.webhook_id].append(delivery)
    return grouped


def assert_one_message_per_job(receiver: Receiver, prompts: dict[str, str]) -> dict[str, list[Delivery]]:
    """Every job arrived, signed; all its deliveries share one webhook-id and one body, with its audio."""
    grouped = by_webhook_id(receiver.deliveries)
    assert set(grouped) == set(prompts)
    for job_id, deliveries in grouped.items():
        assert len({delivery.body for delivery in deliveries}) == 1, "a redelivery is the same message"
        for delivery in deliveries:
            verify(SECRET, delivery.headers, delivery.body)
        event = deliveries[0].event()
        assert event["id"] == job_id and event["data"]["audio"] == prediction_for(prompts[job_id])["audio"]
    assert {d.webhook_id for d in receiver.acknowledged()} == set(prompts)
    return grouped


def test_sigkill_of_the_sidecar_holding_jobs_hands_them_to_the_other_once_the_lease_lapses(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver, pg_url: str
) -> None:
    first = start_sidecar("a", SIDECAR_CONCURRENCY="3", SIDECAR_DELIVERY_CONCURRENCY="3")
    prompts: dict[str, str] = {}
    # Three jobs run and reach the receiver, which holds their deliveries open...
    receiver.gate.clear()
    for index in range(3):
        prompt = f"Delivering {index}."
        prompts[submit(first.url, job_body(receiver, prompt))] = prompt
    wait_for(lambda: receiver.held == 3, 15, "three deliveries held at the receiver")
    delivering = set(prompts)
    # ...and three more are mid-call at the model.
    fake_model.gate.clear()
    for index in range(3):
        prompt = f"Running {index}."
        prompts[submit(first.url, job_body(receiver, prompt))] = prompt
    wait_for(lambda: fake_model.in_flight == 3, 15, "three model calls in flight")
    running = set(prompts) - delivering
    assert states(pg_url) == {**dict.fromkeys(delivering, "delivering"), **dict.fromkeys(running, "running")}

    second = start_sidecar("b", SIDECAR_CONCURRENCY="3", SIDECAR_DELIVERY_CONCURRENCY="3")
    first.kill()
    fake_model.gate.set()
    receiver.gate.set()
    # The dead sidecar's leases still stand for a while (up to a lease after its last renewal, which
    # came at most a third of a lease before the kill): nobody takes its jobs early.
    time.sleep(0.3)
    assert states(pg_url) == {**dict.fromkeys(delivering, "delivering"), **dict.fromkeys(running, "running")}

    wait_for(lambda: set(states(pg_url).values()) == {"delivered"}, 20, "every job delivered by the survivor")
    grouped = assert_one_message_per_job(receiver, prompts)
    assert all(len(grouped[job_id]) >= 2 for job_id in delivering), "held deliveries came again"
    assert all(fake_model.prompts.count(prompts[job_id]) >= 2 for job_id in running), "running jobs ran again"
    assert "took over 3 runs and 3 deliveries" in second.log()


def test_sigterm_hands_work_to_the_other_sidecar_at_once(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver, pg_url: str
) -> None:
    long_lease = "30"
    first = start_sidecar("a", SIDECAR_CONCURRENCY="2", SIDECAR_GRACE_PERIOD_S="0.5", SIDECAR_LEASE_S=long_lease)
    fake_model.gate.clear()
    texts = [f"Handed over {index}." for index in range(2)]
    prompts = {submit(first.url, job_body(receiver, text)): text for text in texts}
    wait_for(lambda: fake_model.in_flight == 2, 15, "both jobs running on the first sidecar")
    second = start_sidecar("b", SIDECAR_CONCURRENCY="2", SIDECAR_LEASE_S=long_lease)

    first.signal(signal.SIGTERM)
    assert first.wait(20) == 0
    handed_back_at = time.monotonic()
    assert set(states(pg_url).values()) <= {"queued", "running"}
    fake_model.gate.set()
    wait_for(lambda: set(states(pg_url).values()) == {"delivered"}, 10, "every job delivered by the other sidecar")
    assert time.monotonic() - handed_back_at < float(long_lease) / 2, "no waiting for the lease"
    assert_one_message_per_job(receiver, prompts)
    with psycopg.connect(pg_url) as conn:
        attempts = [row[0] for row in conn.execute("SELECT attempts FROM bark_jobs").fetchall()]
    assert attempts == [1, 1], "a handed-back call is not counted as a failed attempt"
    assert second.process is not None and second.process.poll() is None


def test_fifty_jobs_across_three_sidecars_each_delivered_with_one_webhook_id_and_never_run_twice_at_once(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver, pg_url: str
) -> None:
    fake_model.delay_s = 0.05  # long enough that a job run twice at once would overlap at the model
    sidecars = [start_sidecar(name, SIDECAR_CONCURRENCY="3") for name in ("a", "b", "c")]
    prompts: dict[str, str] = {}
    for index in range(50):
        prompt = f"Job number {index}."
        prompts[submit(sidecars[index % 3].url, job_body(receiver, prompt))] = prompt
    wait_for(lambda: list(states(pg_url).values()).count("delivered") == 50, 60, "fifty jobs delivered")

    assert fake_model.overlaps == [], "no job is run by two sidecars at the same time"
    assert sorted(fake_model.prompts) == sorted(prompts.values()), "each job ran once"
    assert_one_message_per_job(receiver, prompts)
    # The receiver's view without trusting ids: each job's audio arrived under exactly one webhook-id.
    ids_per_audio: dict[str, set[str]] = defaultdict(set)
    for delivery in receiver.deliveries:
        ids_per_audio[delivery.event()["data"]["audio"]].add(delivery.webhook_id)
    assert len(ids_per_audio) == 50 and all(len(ids) == 1 for ids in ids_per_audio.values())
    workers = [sidecar for sidecar in sidecars if " succeeded" in sidecar.log()]
    assert len(workers) >= 2, "the jobs were shared out"


def test_an_unreachable_database_answers_503_with_retry_after_and_service_resumes(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, postgres: PostgresServer, pg_url: str
) -> None:
    sidecar = make_sidecar(database_url=pg_url, db_wait_s=0.5)
    database = pg_url.rsplit("/", 1)[1]

    def allow(allowed: bool) -> None:
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))

    allow(False)
    try:
        with sidecar.client() as client:
            refused = client.post("/async_predict", json=job_body(receiver, "Not now."))
            status = client.get("/jobs/some-job")
    finally:
        allow(True)
    for response in (refused, status):
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "the job store is unavailable; retry shortly"}
        assert response.headers["retry-after"]
    with sidecar.client() as client:
        accepted = wait_for(
            lambda: (r := client.post("/async_predict", json=job_body(receiver, "Now."))).status_code == 202 and r,
            15,
            "intake to work again",
        )
    sidecar.wait_state(accepted.json()["job_id"], "delivered")


def test_status_downloads_and_idempotent_replays_from_either_replica(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, pg_url: str
) -> None:
    first = make_sidecar(database_url=pg_url, inline_audio_max_bytes=0)
    second = make_sidecar(database_url=pg_url, inline_audio_max_bytes=0)
    body = job_body(receiver, "Any replica answers.")
    with first.client() as client:
        accepted = client.post("/async_predict", json=body, headers={"idempotency-key": "order-7"})
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    with second.client() as client:
        replay = client.post("/async_predict", json=body, headers={"idempotency-key": "order-7"})
        conflict = client.post(
            "/async_predict", json=job_body(receiver, "Other text."), headers={"idempotency-key": "order-7"}
        )
    assert replay.status_code == 202 and replay.json()["job_id"] == job_id
    assert replay.headers["idempotent-replayed"] == "true"
    assert conflict.status_code == 409

    status = second.wait_state(job_id, "delivered")
    assert status == first.job(job_id)
    (delivery,) = receiver.acknowledged()
    link = httpx.URL(delivery.event()["data"]["audio_url"])
    for replica in (first, second):
        with replica.client() as client:
            download = client.get(link.path)
        assert download.status_code == 200, download.text
        assert download.headers["content-type"] == "audio/wav"
        assert download.content == wav_for("Any replica answers.")
    assert base64.b64decode(prediction_for("Any replica answers.")["audio"]) == wav_for("Any replica answers.")
