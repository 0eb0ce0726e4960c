"""Splitting a long text into chunks runs in a worker thread, not on the event loop that serves
every other request. The planner here blocks until the event loop itself releases it: planned on
the loop, it would wait for a task that cannot run, and time out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from fastapi import FastAPI

from model_server.config import Settings
from model_server.generation.sentences import sentence_splitter
from model_server.http.openai_speech.api_router import register_speech_route
from model_server.synthesis import SynthesisService
from tests.stub_engine import StubEngine, stub_model

RELEASE_TIMEOUT_S = 10.0


def blocking_planner(service: SynthesisService, planned_on: list[str]) -> threading.Event:
    """Make `service.plan` wait until the returned event is set (by a task on the loop)."""
    released = threading.Event()
    plan: Callable[..., Any] = service.plan

    def plan_after_release(*args: Any, **kwargs: Any) -> Any:
        planned_on.append(threading.current_thread().name)
        if not released.wait(RELEASE_TIMEOUT_S):
            raise AssertionError("the event loop could not run while the text was being planned")
        return plan(*args, **kwargs)

    service.plan = plan_after_release  # type: ignore[method-assign]
    return released


async def release_from_the_loop(released: threading.Event, planned_on: list[str]) -> None:
    while not planned_on:  # planning has started (in whichever thread)
        await asyncio.sleep(0.01)
    released.set()


def test_v1_predict_plans_off_the_event_loop() -> None:
    async def scenario() -> tuple[Any, list[str]]:
        settings = Settings(warmup=False, max_wait_ms=1)
        model = stub_model(settings, StubEngine(settings))
        planned_on: list[str] = []
        released = blocking_planner(model.service, planned_on)
        body = {"instances": [{"prompt": "One sentence. And another one.", "voice": "v2/en_speaker_0"}]}
        try:
            answer, _ = await asyncio.gather(model(body, headers={}), release_from_the_loop(released, planned_on))
        finally:
            await model.service.close()
        return answer, planned_on

    answer, planned_on = asyncio.run(scenario())
    assert answer[0]["predictions"][0]["chunks"] >= 1
    assert planned_on and planned_on[0] != threading.main_thread().name


def test_openai_speech_plans_off_the_event_loop() -> None:
    async def scenario() -> tuple[httpx.Response, list[str]]:
        settings = Settings(warmup=False, max_wait_ms=1)
        model = stub_model(settings, StubEngine(settings))
        app = FastAPI()
        register_speech_route(app, model.service, lambda: True)
        planned_on: list[str] = []
        released = blocking_planner(model.service, planned_on)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                request = client.post("/v1/audio/speech", json={"input": "Hello there. Bye.", "voice": "alloy"})
                response, _ = await asyncio.gather(request, release_from_the_loop(released, planned_on))
        finally:
            await model.service.close()
        return response, planned_on

    response, planned_on = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert planned_on and planned_on[0] != threading.main_thread().name


def test_shared_sentence_splitters_are_safe_across_threads() -> None:
    """Plans run in worker threads at once; each splitter is shared (pysbd's keeps state: locked)."""
    texts = {
        "hi": ["पहला वाक्य है। दूसरा वाक्य है।", "यह तीसरा है। और चौथा।"],
        "ja": ["これは一つ目です。これは二つ目です。", "三つ目の文です。四つ目です。"],
        "en": ["Dr. Smith left. He came back.", "One more. And the last one."],
        "de": ["Das ist z. B. gut. Wir gehen jetzt.", "Noch ein Satz. Und der letzte."],
        "zh": ["这是第一句。这是第二句。", "第三句话。最后一句。"],
    }
    for language, pair in texts.items():
        _, split = sentence_splitter(language)
        expected = [split(text) for text in pair]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(split, pair * 200))
        assert results == expected * 200, language
