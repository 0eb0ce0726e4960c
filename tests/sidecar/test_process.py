"""`python -m webhook_sidecar` as a process: nothing is lost to SIGKILL, and SIGTERM drains.

The fake model and the receiver run in this test process; gates hold their requests open to freeze
the sidecar with jobs queued, running, or mid-delivery when the signal arrives.
"""

from __future__ import annotations

import base64
import signal
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.sidecar.harness import (
    SECRET,
    Delivery,
    FakeModel,
    Receiver,
    SidecarProcess,
    decode_wav,
    job_body,
    process_env,
    samples_for,
    sidecar_processes,
    submit,
    wait_for,
)
from webhook_sidecar.signing import verify


@pytest.fixture
def start_sidecar(tmp_path: Path, fake_model: FakeModel) -> Iterator[Callable[..., SidecarProcess]]:
    env = process_env(fake_model.predict_url, SIDECAR_DB_PATH=str(tmp_path / "jobs.sqlite3"))
    with sidecar_processes(tmp_path, env) as start:
        yield lambda **overrides: start("sidecar", **overrides)


def states(db_path: Path) -> dict[str, str]:
    with sqlite3.connect(db_path) as db:
        return dict(db.execute("SELECT id, state FROM jobs").fetchall())


def test_sigkill_while_queued_running_and_delivering_loses_no_job(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver, tmp_path: Path
) -> None:
    db_path = tmp_path / "jobs.sqlite3"
    prompts = {}

    # 1. Jobs queued and running (the model holds its two calls open): SIGKILL.
    fake_model.gate.clear()
    first = start_sidecar(SIDECAR_CONCURRENCY="2")
    for index in range(6):
        prompt = f"Sentence number {index}."
        prompts[submit(first.url, job_body(receiver, prompt))] = prompt
    wait_for(lambda: fake_model.in_flight == 2, 10, "two model calls in flight")
    before = states(db_path)
    assert Counter(before.values()) == {"running": 2, "queued": 4}
    was_running = {job_id for job_id, state in before.items() if state == "running"}
    first.kill()

    # 2. Restarted: the jobs run again, deliveries reach the receiver, which holds them: SIGKILL.
    receiver.gate.clear()
    fake_model.gate.set()
    second = start_sidecar(SIDECAR_CONCURRENCY="2")
    wait_for(lambda: receiver.held >= 2, 15, "deliveries held at the receiver")
    held = {delivery.webhook_id for delivery in receiver.deliveries}
    assert "delivering" in states(db_path).values()
    second.kill()

    # 3. Restarted once more: everything is delivered.
    receiver.gate.set()
    third = start_sidecar(SIDECAR_CONCURRENCY="2")
    wait_for(lambda: set(states(db_path).values()) == {"delivered"}, 30, "every job delivered")
    with sqlite3.connect(db_path) as db:
        outcomes = dict(db.execute("SELECT id, outcome FROM jobs").fetchall())
    assert set(outcomes.values()) == {"succeeded"}
    third.stop()

    # The receiver's view: one message per job (by webhook-id), each with that job's audio, signed.
    by_id: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in receiver.deliveries:
        by_id[delivery.webhook_id].append(delivery)
    assert set(by_id) == set(prompts)
    for job_id, deliveries in by_id.items():
        assert len({delivery.body for delivery in deliveries}) == 1, "a redelivery is the same message"
        for delivery in deliveries:
            verify(SECRET, delivery.headers, delivery.body)
        event = deliveries[0].event()
        assert event["id"] == job_id and event["type"] == "com.barkkserve.tts.completed"
        samples, _ = decode_wav(base64.b64decode(event["data"]["audio"]))
        assert np.array_equal(samples, samples_for(prompts[job_id]))
    # What was mid-delivery at the kill came again, under the same webhook-id (receivers dedupe).
    assert all(len(by_id[job_id]) >= 2 for job_id in held)
    # What was running at the first kill ran again.
    calls = Counter(fake_model.prompts)
    assert all(calls[prompts[job_id]] >= 2 for job_id in was_running)


def test_sigterm_refuses_intake_finishes_the_running_job_and_leaves_the_queue(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver, tmp_path: Path
) -> None:
    fake_model.gate.clear()
    sidecar = start_sidecar(SIDECAR_CONCURRENCY="1", SIDECAR_GRACE_PERIOD_S="20")
    job_ids = [submit(sidecar.url, job_body(receiver, f"Job {index}.")) for index in range(3)]
    wait_for(lambda: fake_model.in_flight == 1, 10, "the first job running")
    sidecar.signal(signal.SIGTERM)

    wait_for(lambda: httpx.get(f"{sidecar.url}/readyz").status_code == 503, 10, "readiness to turn 503")
    refused = httpx.post(f"{sidecar.url}/async_predict", json=job_body(receiver))
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
    assert refused.headers["retry-after"]
    assert httpx.get(f"{sidecar.url}/jobs/{job_ids[0]}").json()["state"] == "running"

    fake_model.gate.set()
    assert sidecar.wait(20) == 0
    assert states(tmp_path / "jobs.sqlite3") == {
        job_ids[0]: "delivered",
        job_ids[1]: "queued",
        job_ids[2]: "queued",
    }
    assert [delivery.webhook_id for delivery in receiver.deliveries] == [job_ids[0]]


def test_sigterm_hands_back_work_the_grace_period_cannot_finish(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver, tmp_path: Path
) -> None:
    fake_model.gate.clear()
    sidecar = start_sidecar(SIDECAR_GRACE_PERIOD_S="0.5")
    job_id = submit(sidecar.url, job_body(receiver, "Too slow."))
    wait_for(lambda: fake_model.in_flight == 1, 10, "the job running")
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait(20) == 0
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        state, last_error = db.execute("SELECT state, last_error FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert state == "queued" and "interrupted" in last_error

    fake_model.gate.set()
    start_sidecar()
    wait_for(lambda: states(tmp_path / "jobs.sqlite3")[job_id] == "delivered", 15, "the job delivered")
    assert [delivery.webhook_id for delivery in receiver.acknowledged()] == [job_id]


def test_a_second_sidecar_on_the_same_sqlite_file_refuses_to_start_and_says_why(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver, tmp_path: Path
) -> None:
    first = start_sidecar()
    job_id = submit(first.url, job_body(receiver, "Mine alone."))
    with pytest.raises(RuntimeError, match=r"sidecar exited with") as refused:
        start_sidecar()
    assert f"{tmp_path / 'jobs.sqlite3'} is in use by pid {first.process.pid}" in str(refused.value)  # type: ignore[union-attr]
    assert "use the PostgreSQL store to share jobs between replicas" in str(refused.value)
    wait_for(lambda: states(tmp_path / "jobs.sqlite3").get(job_id) == "delivered", 15, "the first sidecar's job")
    first.kill()  # the kernel drops the lock with the process: a restart may open the file again
    start_sidecar()
