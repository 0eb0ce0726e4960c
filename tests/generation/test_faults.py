"""Faults: an out-of-memory batch is split and retried; any other failure is a 500 for its own request only."""

from __future__ import annotations

import asyncio
import re

import pytest
import torch
from fastapi import FastAPI
from kserve.errors import generic_exception_handler
from starlette.testclient import TestClient

from bark_common.errors import GenerationFailed
from model_server.config import Settings
from model_server.generation.engine import Sampling
from model_server.generation.faults import run_splitting_on_oom
from model_server.http.errors import register_error_handlers
from model_server.synthesis import ChunkPayload
from tests.stub_engine import StubEngine, stub_model

KEY = ("v2/en_speaker_0", Sampling())


def settings(**overrides: object) -> Settings:
    return Settings(warmup=False, max_wait_ms=5, **overrides)  # type: ignore[arg-type]


def payloads(count: int) -> list[ChunkPayload]:
    return [ChunkPayload("x" * (index + 1), 10) for index in range(count)]


def test_out_of_memory_batch_is_split_in_halves_and_results_keep_their_order():
    engine = StubEngine(settings(), oom_above=2)
    model = stub_model(settings(), engine)
    waveforms = model.service.run_batch(KEY, payloads(7))
    # Each waveform has one sample per character of its text: chunk i has i + 1.
    assert [len(waveform) for waveform in waveforms] == [1, 2, 3, 4, 5, 6, 7]
    assert [len(call) for call in engine.calls] == [7, 3, 1, 2, 4, 2, 2]


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, MemoryError])
def test_both_device_and_host_out_of_memory_split(error):
    sizes: list[int] = []
    releases: list[int] = []

    def run(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        if len(batch) > 1:
            raise error("out of memory")
        return [value * 10 for value in batch]

    assert run_splitting_on_oom(run, [1, 2, 3], lambda: releases.append(1)) == [10, 20, 30]
    assert sizes == [3, 1, 2, 1, 1]
    assert len(releases) == 2, "memory is released before each retry"


def test_a_single_chunk_out_of_memory_fails():
    engine = StubEngine(settings(), oom_above=0)
    model = stub_model(settings(), engine)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        model.service.run_batch(KEY, payloads(2))
    assert [len(call) for call in engine.calls] == [2, 1]


def test_other_errors_are_not_retried():
    engine = StubEngine(settings(), explode_on="x")
    model = stub_model(settings(), engine)
    with pytest.raises(RuntimeError, match="stub engine failure"):
        model.service.run_batch(KEY, payloads(4))
    assert len(engine.calls) == 1


def test_failed_generation_fails_only_its_request_with_its_request_id():
    async def scenario() -> tuple[object, object, object]:
        engine = StubEngine(settings(), explode_on="explode")
        model = stub_model(settings(), engine)
        failing = {"instances": [{"prompt": "Please explode now.", "voice": "v2/en_speaker_0"}]}
        healthy = {"instances": [{"prompt": "Please speak now.", "voice": "v2/en_speaker_1"}]}
        results = await asyncio.gather(
            model(failing, headers={"x-request-id": "req-123"}),
            model(healthy, headers={}),
            model(failing, headers={}),
            return_exceptions=True,
        )
        await model.service.close()
        return results[0], results[1], results[2]

    named, served, anonymous = asyncio.run(scenario())
    assert isinstance(named, GenerationFailed)
    assert named.request_id == "req-123"
    assert "stub engine failure" in str(named)
    assert isinstance(served, tuple), served  # KServe's Model.__call__ answers (body, response headers)
    assert served[0]["predictions"][0]["chunks"] == 1
    assert isinstance(anonymous, GenerationFailed)
    assert re.fullmatch(r"[0-9a-f]{32}", anonymous.request_id), "an id is generated when the client sent none"


def test_generation_failed_is_a_500_carrying_the_request_id():
    app = FastAPI()
    register_error_handlers(app)
    app.add_exception_handler(Exception, generic_exception_handler)  # KServe's catch-all, as in the server

    @app.post("/fail")
    async def fail() -> None:
        raise GenerationFailed("generation failed: RuntimeError: boom", "req-456")

    response = TestClient(app, raise_server_exceptions=False).post("/fail")
    assert response.status_code == 500
    assert response.json() == {"error": "generation failed: RuntimeError: boom", "request_id": "req-456"}
    assert response.headers["x-request-id"] == "req-456"
