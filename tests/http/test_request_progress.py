"""`GET /v1/requests/{id}/progress` while a request runs: chunks done of chunks queued, per route."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import httpx
from fastapi import FastAPI

from model_server.config import Settings
from model_server.generation.engine import BatchOutput, Sampling
from model_server.http.errors import register_error_handlers
from model_server.http.routes import register_routes
from model_server.model import BarkTTS
from tests.stub_engine import StubEngine, stub_model

THREE_SENTENCES = "One two three. Four five six. Seven eight nine."


class GatedEngine(StubEngine):
    """Each batch waits for one `release()`: the test decides when every chunk is done."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.gate = threading.Semaphore(0)

    def release(self, batches: int = 1) -> None:
        for _ in range(batches):
            self.gate.release()

    def generate_batch(
        self, texts: Sequence[str], voice: str | None, sampling: Sampling, budgets: Sequence[int]
    ) -> BatchOutput:
        if not self.gate.acquire(timeout=30):
            raise TimeoutError("the test never released this batch")
        return super().generate_batch(texts, voice, sampling, budgets)


def build() -> tuple[FastAPI, BarkTTS, GatedEngine]:
    # One chunk per batch and one sentence per chunk: three batches, released one by one.
    settings = Settings(warmup=False, max_wait_ms=1, max_batch_size=1, default_chunk_words=3)
    engine = GatedEngine(settings)
    model = stub_model(settings, engine)
    app = FastAPI()
    register_error_handlers(app)
    register_routes(app, model)
    return app, model, engine


async def progress_of(client: httpx.AsyncClient, request_id: str) -> httpx.Response:
    return await client.get(f"/v1/requests/{request_id}/progress")


async def wait_for_done(client: httpx.AsyncClient, request_id: str, chunks_done: int) -> dict[str, Any]:
    for _ in range(500):
        response = await progress_of(client, request_id)
        if response.status_code == 200 and response.json()["chunks_done"] == chunks_done:
            return dict(response.json())
        await asyncio.sleep(0.01)
    raise AssertionError(f"{request_id} never reached {chunks_done} chunks done: {response.text}")


def test_progress_of_a_running_v1_request_counts_its_chunks() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], httpx.Response, httpx.Response]:
        app, model, engine = build()
        seen = []
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                before = await progress_of(client, "req-7")
                body = {"instances": [{"prompt": THREE_SENTENCES}]}
                answer = asyncio.ensure_future(model(body, headers={"x-request-id": "req-7"}))
                seen.append(await wait_for_done(client, "req-7", 0))
                engine.release()
                seen.append(await wait_for_done(client, "req-7", 1))
                engine.release(2)
                await answer
                seen.append(await wait_for_done(client, "req-7", 3))
                unknown = await progress_of(client, "req-8")
                too_long = await progress_of(client, "r" * 200)
        finally:
            await model.service.close()
        return seen, before, unknown, too_long

    (queued, one, finished), before, unknown, too_long = asyncio.run(scenario())
    assert too_long.status_code == 404 and "longer than 128" in too_long.json()["error"]
    assert before.status_code == 404, "not known before its chunks are queued"
    assert (queued["chunks_total"], queued["finished"]) == (3, False)
    assert (one["chunks_total"], one["finished"]) == (3, False)
    assert (finished["chunks_total"], finished["finished"]) == (3, True)
    assert unknown.status_code == 404
    assert "req-8" in unknown.json()["error"]


def test_progress_of_an_openai_speech_request() -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        app, model, engine = build()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                body = {"input": THREE_SENTENCES, "voice": "alloy", "response_format": "wav"}
                speech = asyncio.ensure_future(
                    client.post("/v1/audio/speech", json=body, headers={"x-request-id": "speech-1"})
                )
                running = await wait_for_done(client, "speech-1", 0)
                engine.release(3)
                status = (await speech).status_code
                finished = await wait_for_done(client, "speech-1", 3)
        finally:
            await model.service.close()
        return running, finished, status

    running, finished, status = asyncio.run(scenario())
    assert status == 200
    assert (running["chunks_total"], running["finished"]) == (3, False)
    assert (finished["chunks_total"], finished["finished"]) == (3, True)
