"""A running job shows the model server's progress; the model call carries the job id as `x-request-id`.

The fake model's gate holds the predict call open while the sidecar polls its progress route, whose
answers each test sets. Progress is a nicety: no answer of that route may change how the job ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest

from tests.sidecar.harness import FakeModel, InProcessSidecar, Receiver, job_body, prediction_for, submit, wait_for
from webhook_sidecar.progress import progress_url, read_progress, watching_progress
from webhook_sidecar.store_base import Store

Progress = dict[str, int]


def progress(done: int, total: int) -> Progress:
    return {"chunks_done": done, "chunks_total": total}


def wait_progress(sidecar: InProcessSidecar, job_id: str, expected: Progress) -> dict[str, Any]:
    return wait_for(lambda: (job := sidecar.job(job_id))["progress"] == expected and job, what=f"progress {expected}")


def test_a_running_job_shows_the_model_servers_progress_then_all_chunks_done(
    make_sidecar: Callable[..., InProcessSidecar], fake_model: FakeModel, receiver: Receiver
) -> None:
    sidecar = make_sidecar(progress_poll_s=0.02, model_api_key="model-key")
    fake_model.gate.clear()
    job_id = submit(sidecar.url, job_body(receiver, "A long text."))
    running = sidecar.wait_state(job_id, "running")
    assert running["progress"] is None, "nothing is known before the model server reports"

    fake_model.progress = (200, {**progress(3, 10), "finished": False})
    assert wait_progress(sidecar, job_id, progress(3, 10))["state"] == "running"
    fake_model.progress = (200, {**progress(7, 10), "finished": False})
    wait_progress(sidecar, job_id, progress(7, 10))

    read_ids = {request_id for request_id, _ in fake_model.progress_reads}
    assert read_ids == {job_id}, "the progress route is asked about this job's request id"
    assert all(headers["authorization"] == "Bearer model-key" for _, headers in fake_model.progress_reads)
    assert fake_model.request_ids == [job_id], "the model call carries the job id as x-request-id"

    fake_model.script.append((200, {"predictions": [{**prediction_for("A long text."), "chunks": 10}]}, {}))
    fake_model.gate.set()
    done = sidecar.wait_state(job_id, "delivered")
    assert done["outcome"] == "succeeded" and done["progress"] == progress(10, 10)


def test_a_job_shows_its_predictions_chunks_without_polling_and_polling_stops_with_the_call(
    make_sidecar: Callable[..., InProcessSidecar], fake_model: FakeModel, receiver: Receiver
) -> None:
    sidecar = make_sidecar(progress_poll_s=0)
    fake_model.progress = (200, progress(1, 5))
    job_id = submit(sidecar.url, job_body(receiver))
    done = sidecar.wait_state(job_id, "delivered")
    assert done["progress"] == progress(1, 1), "the prediction says how many chunks it took"
    assert fake_model.request_ids == [job_id]
    assert fake_model.progress_reads == [], "progress_poll_s=0 never asks"


@pytest.mark.parametrize(
    "answer",
    [
        (404, {"error": "no such request"}),
        (500, {"error": "boom"}),
        (200, "not json"),
        (200, {"chunks_done": "3", "chunks_total": 10}),
        (200, {"chunks_done": 5, "chunks_total": 3}),
        (200, {"chunks_total": 3}),
    ],
    ids=["404", "500", "not-json", "string-count", "done-over-total", "no-done"],
)
def test_a_useless_progress_answer_leaves_the_job_alone(
    make_sidecar: Callable[..., InProcessSidecar],
    fake_model: FakeModel,
    receiver: Receiver,
    answer: tuple[int, dict[str, Any] | str],
) -> None:
    sidecar = make_sidecar(progress_poll_s=0.02)
    fake_model.gate.clear()
    fake_model.progress = answer
    job_id = submit(sidecar.url, job_body(receiver))
    wait_for(lambda: len(fake_model.progress_reads) >= 3, what="three progress reads")
    held = sidecar.job(job_id)
    assert held["state"] == "running" and held["progress"] is None and held["last_error"] is None
    fake_model.gate.set()
    done = sidecar.wait_state(job_id, "delivered")
    assert done["outcome"] == "succeeded" and done["attempts"] == 1 and done["progress"] == progress(1, 1)


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")], ids=repr)
def test_an_unreachable_or_slow_progress_route_reads_as_no_progress(error: httpx.HTTPError) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async def read() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as client:
            return await read_progress(client, "http://model/v1/requests/j/progress", {})

    assert asyncio.run(read()) is None


def test_the_progress_url_is_on_the_model_servers_host() -> None:
    model_url = "https://model.local:8443/v1/models/bark:predict?x=1"
    assert progress_url(model_url, "a/b c") == "https://model.local:8443/v1/requests/a%2Fb%20c/progress"


class SlowStore:
    """Only `note_progress`, and it holds each write until `release` is set."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.writes: list[tuple[str, int, int]] = []

    def note_progress(self, job_id: str, done: int, total: int) -> None:
        self.started.set()
        self.release.wait(10)
        self.writes.append((job_id, done, total))


def test_the_poller_ends_with_the_call_after_the_write_it_started_and_leaves_no_task() -> None:
    store = SlowStore()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=progress(1, 2))

    def pollers() -> list[asyncio.Task[Any]]:
        return [task for task in asyncio.all_tasks() if task.get_name().startswith("progress-")]

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            watch = watching_progress(cast(Store, store), client, "http://model/p", "j", {}, 0.01)
            with pytest.raises(RuntimeError, match="the call broke"):
                async with watch:
                    await asyncio.to_thread(store.started.wait, 10)  # a write is under way
                    threading.Timer(0.1, store.release.set).start()  # it lands after the call ended
                    raise RuntimeError("the call broke")
            assert store.writes == [("j", 1, 2)], "the exit waited for the write under way"
            assert pollers() == []

    asyncio.run(scenario())
