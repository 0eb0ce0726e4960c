"""Streams fail honestly: refusals before the first byte keep their status, failures after it are visible.

The speech route runs in-process on a real uvicorn (so an aborted transfer is a real one) over a stub
engine whose faults are scripted by the text: "explode" fails a batch, "slowly" takes `slow_s`,
"hold" waits until the test releases it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY

from model_server.config import Settings
from model_server.generation.engine import BatchOutput, Sampling
from model_server.http.disconnect import CancelOnDisconnect
from model_server.http.errors import register_error_handlers
from model_server.http.openai_speech import serving
from model_server.http.openai_speech.api_router import register_speech_route
from model_server.http.outcomes import CountOutcomes
from model_server.model import BarkTTS
from tests.serving import free_port
from tests.stub_engine import StubEngine, stub_model

SPEECH = "/v1/audio/speech"
#: Four sentences of ten words: streamed, the first is a chunk of its own and the rest make two more.
FOUR_SENTENCES = " ".join(f"Sentence {n} has exactly ten words to fill the chunk up." for n in range(4))


class ScriptedEngine(StubEngine):
    """The stub engine with time: "slowly" sleeps `slow_s`, "hold" waits for `release`."""

    def __init__(self, settings: Settings, slow_s: float = 0.0):
        super().__init__(settings, explode_on="explode")
        self.slow_s = slow_s
        self.release = threading.Event()

    def generate_batch(
        self, texts: Sequence[str], voice: str | None, sampling: Sampling, budgets: Sequence[int]
    ) -> BatchOutput:
        if any("slowly" in text for text in texts):
            time.sleep(self.slow_s)
        if any("hold" in text.lower() for text in texts):
            self.release.wait(10)
        return super().generate_batch(texts, voice, sampling, budgets)


@dataclass
class App:
    url: str
    model: BarkTTS
    engine: ScriptedEngine
    loop_thread: threading.Thread


@contextmanager
def speech_app(slow_s: float = 0.0, **overrides: Any) -> Iterator[App]:
    """The speech route with the server's middlewares, on uvicorn in a thread, until the block ends."""
    settings = Settings(warmup=False, max_wait_ms=1, **overrides)
    engine = ScriptedEngine(settings, slow_s)
    model = stub_model(settings, engine)
    app = FastAPI()
    register_error_handlers(app)
    register_speech_route(app, model.service, lambda: model.ready)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(CountOutcomes)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield App(f"http://127.0.0.1:{port}", model, engine, thread)
    finally:
        engine.release.set()
        server.should_exit = True
        thread.join(10)
        model.service.scheduler._executor.shutdown(wait=False, cancel_futures=True)


def counted(code: int, reason: str) -> float:
    labels = {"route": "openai_speech", "code": str(code), "reason": reason}
    return REGISTRY.get_sample_value("bark_requests_total", labels) or 0.0


def wait_counted(code: int, reason: str, expected: float) -> None:
    """The count is made once the response is sent, so a moment after the client has read it."""
    deadline = time.monotonic() + 5
    while counted(code, reason) != expected:
        assert time.monotonic() < deadline, f"{code} {reason}: {counted(code, reason)}, expected {expected}"
        time.sleep(0.01)


def speak(app: App, text: str, **body: Any) -> httpx.Response:
    return httpx.post(app.url + SPEECH, json={"input": text, "response_format": "pcm", **body}, timeout=30)


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def assert_openai_error(response: httpx.Response, status: int, kind: str, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (kind, code)
    return error


@pytest.mark.parametrize("stream", [{"stream": True}, {"stream_format": "sse"}])
def test_a_stream_longer_than_the_queue_is_a_400_before_any_byte(stream):
    with speech_app(max_queue_chunks=2) as app:
        before = counted(400, "invalid_input")
        error = assert_openai_error(speak(app, FOUR_SENTENCES, **stream), 400, "invalid_request_error", None)
        assert "more than the queue holds" in error["message"]
        wait_counted(400, "invalid_input", before + 1)
        assert app.model.service.scheduler.queued_chunks == 0


def test_a_stream_on_a_full_queue_is_a_503_with_retry_after():
    with speech_app(max_queue_chunks=2, max_batch_size=1) as app:
        results: list[httpx.Response] = []
        holder = threading.Thread(target=lambda: results.append(speak(app, "Hold on. Then go.", stream=True)))
        holder.start()
        deadline = time.monotonic() + 10
        while app.model.service.scheduler.queued_chunks != 1:  # "Hold on." runs (held), "Then go." waits
            assert time.monotonic() < deadline
            time.sleep(0.02)
        before = counted(503, "overloaded")
        response = speak(app, "One more. And another.", stream=True)
        assert_openai_error(response, 503, "server_error", "overloaded")
        assert response.headers["retry-after"] == str(app.model.service.scheduler.retry_after_s)
        wait_counted(503, "overloaded", before + 1)
        app.engine.release.set()
        holder.join(30)
        assert results[0].status_code == 200 and results[0].content


@pytest.mark.parametrize("stream", [{"stream": True}, {"stream_format": "sse"}])
def test_a_stream_past_the_timeout_before_its_first_byte_is_a_504(stream):
    with speech_app(slow_s=2.0, request_timeout_s=0.3) as app:
        before = counted(504, "timeout")
        started = time.monotonic()
        error = assert_openai_error(speak(app, "Speak slowly please.", **stream), 504, "server_error", "timeout")
        assert time.monotonic() - started < 1.5
        assert "request_timeout_s" in error["message"]
        wait_counted(504, "timeout", before + 1)


def test_an_audio_stream_failing_after_its_first_byte_is_an_incomplete_transfer():
    with speech_app() as app:
        before_failed, before_ok = counted(500, "generation_error"), counted(200, "ok")
        received = b""
        body = {"input": "Hello there. Please explode now.", "response_format": "pcm", "stream": True}
        with httpx.stream("POST", app.url + SPEECH, json=body, timeout=30) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
                for piece in response.iter_raw():
                    received += piece
        assert len(received) == 2 * len("Hello there."), "the first sentence arrived before the failure"
        wait_counted(500, "generation_error", before_failed + 1)
        assert counted(200, "ok") == before_ok


def test_an_sse_stream_failing_after_its_first_byte_ends_with_an_openai_error_event():
    with speech_app() as app:
        before = counted(500, "generation_error")
        response = speak(app, "Hello there. Please explode now.", stream_format="sse", response_format="pcm")
        assert response.status_code == 200
        events = sse_events(response.text)
        assert [event["type"] for event in events] == ["speech.audio.delta", "error"]
        assert "event: error" in response.text
        error = events[-1]["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("server_error", "generation_error")
        assert response.headers["x-request-id"] in error["message"]
        assert base64.b64decode(events[0]["audio"])
        wait_counted(500, "generation_error", before + 1)


def test_the_timeout_applies_to_the_whole_stream():
    with speech_app(slow_s=1.5, request_timeout_s=0.6) as app:
        before = counted(504, "timeout")
        response = speak(app, "Start now. Then speak slowly.", stream_format="sse")
        events = sse_events(response.text)
        assert [event["type"] for event in events] == ["speech.audio.delta", "error"]
        assert events[-1]["error"]["code"] == "timeout"
        wait_counted(504, "timeout", before + 1)


class RecordingEncoder:
    """Wraps a real stream encoder; records the threads it runs on and whether it was closed."""

    def __init__(self, inner: Any, log: dict[str, Any]):
        self.inner, self.log = inner, log

    def feed(self, audio: np.ndarray) -> bytes:
        self.log["threads"].add(threading.get_ident())
        return self.inner.feed(audio)

    def finish(self) -> bytes:
        self.log["threads"].add(threading.get_ident())
        return self.inner.finish()

    def close(self) -> None:
        self.log["closed"].set()
        self.inner.close()


@pytest.fixture
def encoder_log(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    log: dict[str, Any] = {"threads": set(), "closed": threading.Event()}
    real_encoder, real_speed, real_encode = serving.stream_encoder, serving.change_speed, serving.encode

    def recording_speed(audio: np.ndarray, speed: float) -> np.ndarray:
        log["threads"].add(threading.get_ident())
        return real_speed(audio, speed)

    def recording_encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
        log["threads"].add(threading.get_ident())
        return real_encode(audio, sample_rate, fmt)

    monkeypatch.setattr(serving, "stream_encoder", lambda *args: RecordingEncoder(real_encoder(*args), log))
    monkeypatch.setattr(serving, "change_speed", recording_speed)
    monkeypatch.setattr(serving, "encode", recording_encode)
    return log


@pytest.mark.parametrize("stream", [{"stream": True}, {"stream_format": "sse"}, {}])
def test_speed_change_and_encoding_run_off_the_event_loop(encoder_log, stream):
    with speech_app() as app:
        response = speak(app, "One sentence. And another one.", response_format="mp3", speed=1.5, **stream)
        assert response.status_code == 200 and response.content
    assert encoder_log["threads"], "nothing was encoded"
    assert app.loop_thread.ident not in encoder_log["threads"]


def test_a_client_leaving_mid_stream_closes_the_encoder_drops_its_chunks_and_counts_499(encoder_log):
    with speech_app(max_batch_size=1) as app:
        before = counted(499, "cancelled")
        body = {"input": "Hello there. Hold it. And more.", "response_format": "pcm", "stream": True}
        with httpx.stream("POST", app.url + SPEECH, json=body, timeout=30) as response:
            assert response.status_code == 200
            next(response.iter_raw())  # the first sentence's audio; "Hold it." is being generated
        assert encoder_log["closed"].wait(5), "the encoder was not closed"
        scheduler = app.model.service.scheduler
        assert scheduler is not None
        deadline = time.monotonic() + 5
        while scheduler.queued_chunks or counted(499, "cancelled") != before + 1:
            assert time.monotonic() < deadline, (scheduler.queued_chunks, counted(499, "cancelled") - before)
            time.sleep(0.02)


@pytest.mark.parametrize("stream", [{}, {"stream": True}])
def test_a_failed_request_names_the_request_id_made_for_it(stream):
    with speech_app() as app:
        response = speak(app, "Please explode now.", **stream)
        error = assert_openai_error(response, 500, "server_error", "generation_error")
        request_id = response.headers["x-request-id"]
        assert len(request_id) == 32 and request_id in error["message"]
        assert "unknown" not in error["message"]
        named = httpx.post(
            app.url + SPEECH, json={"input": "Please explode."}, headers={"x-request-id": "req-42"}, timeout=30
        )
        assert named.headers["x-request-id"] == "req-42" and "req-42" in named.json()["error"]["message"]


def test_refusals_and_successes_carry_the_request_id_too():
    with speech_app() as app:
        refused = speak(app, "   ")
        assert refused.status_code == 400 and len(refused.headers["x-request-id"]) == 32
        served = speak(app, "Hi there.", stream=True)
        assert served.status_code == 200 and len(served.headers["x-request-id"]) == 32
