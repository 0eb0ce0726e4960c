"""`DELETE /jobs/{id}`: a queued job ends at once, a running one (on any replica) has its model call
aborted; a cancelled job is never delivered, nor retried. The fake model's gate holds calls open, and
it records the calls whose client hung up (`disconnects`).

"No webhook arrives" is checked without sleeping: a job submitted after the cancel is delivered, so the
delivery loops had every chance to send the cancelled one before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from tests.sidecar.harness import (
    FakeModel,
    InProcessSidecar,
    Receiver,
    job_body,
    prediction_for,
    submit,
    wait_for,
)
from tests.sidecar.test_metrics import samples
from webhook_sidecar.cancellation import JobCancelled, unless_cancelled
from webhook_sidecar.jobs import StoreUnavailable


def cancel(sidecar: InProcessSidecar, job_id: str, **headers: str) -> httpx.Response:
    with sidecar.client() as client:
        return client.delete(f"/jobs/{job_id}", headers=headers)


def assert_only_later_job_delivered(
    sidecar: InProcessSidecar, receiver: Receiver, prompt: str, earlier: tuple[str, ...] = ()
) -> None:
    """A job submitted now is delivered, and the receiver got it and the `earlier` jobs, nothing else."""
    sidecar.wait_state(submit(sidecar.url, job_body(receiver, prompt)), "delivered")
    audio = sorted(delivery.event()["data"]["audio"] for delivery in receiver.deliveries)
    expected = sorted(prediction_for(text)["audio"] for text in (*earlier, prompt))
    assert audio == expected, "the cancelled job was never delivered"


def test_a_queued_job_is_cancelled_at_once_and_never_runs(
    make_sidecar: Callable[..., InProcessSidecar], fake_model: FakeModel, receiver: Receiver
) -> None:
    sidecar = make_sidecar(concurrency=1)
    fake_model.gate.clear()
    busy = submit(sidecar.url, job_body(receiver, "Keeps the only slot busy."))
    wait_for(lambda: fake_model.in_flight == 1, 10, "the first job to hold the slot")
    queued = submit(sidecar.url, job_body(receiver, "Never spoken."))
    assert sidecar.job(queued)["state"] == "queued"

    answer = cancel(sidecar, queued)
    assert answer.status_code == 200, answer.text
    status = answer.json()
    assert status["state"] == "cancelled" and status["cancel_requested"] is True and status["finished_at"]
    assert sidecar.job(queued) == status
    again = cancel(sidecar, queued)
    assert again.status_code == 200 and again.json() == status, "cancelling again is the same answer"

    fake_model.gate.set()
    sidecar.wait_state(busy, "delivered")
    assert_only_later_job_delivered(sidecar, receiver, "Spoken after the cancel.", ("Keeps the only slot busy.",))
    assert "Never spoken." not in fake_model.prompts
    assert sidecar.job(queued)["state"] == "cancelled"
    values = samples(sidecar)
    assert values[("bark_jobs", (("state", "cancelled"), ("store", "sqlite")))] == 1
    assert values[("bark_jobs_cancelled_total", ())] == 1


def test_a_running_job_has_its_model_call_aborted_and_is_neither_delivered_nor_retried(
    make_sidecar: Callable[..., InProcessSidecar], fake_model: FakeModel, receiver: Receiver
) -> None:
    sidecar = make_sidecar(cancel_poll_s=0.05)
    fake_model.gate.clear()
    job_id = submit(sidecar.url, job_body(receiver, "A long story, sent by mistake."))
    wait_for(lambda: fake_model.in_flight == 1, 10, "the model call in flight")

    answer = cancel(sidecar, job_id)
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "running" and answer.json()["cancel_requested"] is True

    ended = sidecar.wait_state(job_id, "cancelled", timeout_s=5)
    assert ended["attempts"] == 0 and ended["outcome"] is None and ended["cancel_requested"] is True
    wait_for(lambda: fake_model.disconnects == [job_id], 5, "the model server to see its request aborted")
    repeat = cancel(sidecar, job_id)
    assert repeat.status_code == 200 and repeat.json()["state"] == "cancelled"

    fake_model.gate.set()
    assert_only_later_job_delivered(sidecar, receiver, "The right text.")
    assert fake_model.prompts.count("A long story, sent by mistake.") == 1, "no retry"
    assert samples(sidecar)[("bark_jobs_cancelled_total", ())] == 1


def test_a_finished_job_is_a_409_an_unknown_one_a_404_and_a_key_is_required(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(api_keys="k")
    key = {"x-api-key": "k"}
    with sidecar.client(headers=key) as client:
        delivered = client.post("/async_predict", json=job_body(receiver, "Done.")).json()["job_id"]
        wait_for(lambda: client.get(f"/jobs/{delivered}").json()["state"] == "delivered", 10, "the delivery")
        receiver.gate.clear()  # the next result is held at the receiver: `delivering`
        delivering = client.post("/async_predict", json=job_body(receiver, "Being sent.")).json()["job_id"]
        wait_for(lambda: receiver.held == 1, 10, "the delivery held at the receiver")

    assert cancel(sidecar, delivered).status_code == 401
    assert cancel(sidecar, delivered, **{"x-api-key": "wrong"}).status_code == 401
    too_late = cancel(sidecar, delivered, **key)
    assert too_late.status_code == 409
    assert too_late.json() == {"error": "job already finished and its result was delivered; nothing to cancel"}
    in_delivery = cancel(sidecar, delivering, **key)
    assert in_delivery.status_code == 409
    assert "already finished (succeeded)" in in_delivery.json()["error"]
    assert "being delivered" in in_delivery.json()["error"]
    unknown = cancel(sidecar, "no-such-job", **key)
    assert unknown.status_code == 404 and unknown.json() == {"error": "no job with this id"}
    receiver.gate.set()
    assert sidecar.job(delivering, **key)["cancel_requested"] is False


def test_a_job_running_on_one_replica_is_cancelled_from_another(
    make_sidecar: Callable[..., InProcessSidecar], fake_model: FakeModel, receiver: Receiver, pg_url: str
) -> None:
    running_here = make_sidecar(database_url=pg_url, cancel_poll_s=0.05)
    fake_model.gate.clear()
    job_id = submit(running_here.url, job_body(receiver, "Cancelled from afar."))
    wait_for(lambda: fake_model.in_flight == 1, 10, "the model call in flight on the first replica")
    other = make_sidecar(database_url=pg_url)

    answer = cancel(other, job_id)
    assert answer.status_code == 202, answer.text
    assert answer.json()["cancel_requested"] is True
    ended = other.wait_state(job_id, "cancelled", timeout_s=5)
    assert ended["attempts"] == 0
    wait_for(lambda: fake_model.disconnects == [job_id], 5, "the first replica to abort its model call")
    assert running_here.job(job_id) == ended

    fake_model.gate.set()
    assert_only_later_job_delivered(running_here, receiver, "Delivered by either replica.")
    values = samples(running_here)
    assert values[("bark_jobs_cancelled_total", ())] == 1, "counted by the replica that stopped it"
    assert values[("bark_jobs", (("state", "cancelled"), ("store", "postgres")))] == 1


def test_an_unreadable_store_never_cancels_a_run_and_a_shutdown_still_cancels_it() -> None:
    async def scenario() -> None:
        async def unreadable() -> bool:
            raise StoreUnavailable("database restarting")

        assert await unless_cancelled(asyncio.sleep(0.05, result="done"), unreadable, 0.01) == "done"

        async def asked() -> bool:
            return True

        stopped = asyncio.Event()

        async def long_run() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                stopped.set()

        with pytest.raises(JobCancelled):
            await unless_cancelled(long_run(), asked, 0.01)
        assert stopped.is_set(), "the run unwound before JobCancelled was raised"

        async def never() -> bool:
            return False

        stopped.clear()
        shutdown = asyncio.ensure_future(unless_cancelled(long_run(), never, 0.01))
        await asyncio.sleep(0.03)
        shutdown.cancel()
        with pytest.raises(asyncio.CancelledError):
            await shutdown
        assert stopped.is_set(), "a shutdown cancels the run too"

    asyncio.run(scenario())
