"""SIGTERM: readiness goes at once, in-flight work finishes within the grace period, then the process exits."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from model_server.config import Settings
from tests.serving import running_server
from tests.stub_engine import StubEngine, stub_model

PREDICT = "/v1/models/bark:predict"
SENTENCE = "Here is one more sentence with eight words."
#: A short request (3 chunks, one row at a time) takes about 2.5 s on an idle 2-core machine; the
#: grace leaves it 4x that, for a loaded CI runner.
GRACE_S = 10
#: After the grace period: the batch running at that moment, then interpreter teardown (~3 s here).
EXIT_SLACK_S = 12


def body(chunks: int, voice: str) -> dict:
    prompt = " ".join([SENTENCE] * chunks)
    return {"instances": [{"prompt": prompt, "voice": voice, "batch_chunk_size": 8, "do_sample": False}]}


def queue_depth(url: str) -> float:
    match = re.search(r"^bark_queue_depth ([0-9.e+]+)$", httpx.get(url + "/metrics", timeout=5).text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for_queue_depth(url: str, at_least: float, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while queue_depth(url) < at_least:
        assert time.monotonic() < deadline, f"queue never reached {at_least} chunks"
        time.sleep(0.05)


def readiness(url: str) -> int | str:
    try:
        return httpx.get(url + "/v1/models/bark", timeout=5).status_code
    except httpx.TransportError as error:  # the listening socket is closed: the port refuses
        return type(error).__name__


def post(url: str, payload: dict) -> int | str:
    try:
        return httpx.post(url + PREDICT, json=payload, timeout=120).status_code
    except httpx.TransportError as error:
        return type(error).__name__


def test_sigterm_drains_in_flight_requests_within_the_grace_period(tiny_checkpoint: Path, tmp_path: Path):
    env = {"BARK_SHUTDOWN_GRACE_S": str(GRACE_S), "BARK_MAX_BATCH_SIZE": "1", "BARK_MAX_WAIT_MS": "0"}
    with running_server(tiny_checkpoint, tmp_path, env=env) as server, concurrent.futures.ThreadPoolExecutor(2) as pool:
        # The scheduler runs the longest-waiting chunks first: the short request's, queued first.
        short = pool.submit(post, server.url, body(3, "v2/en_speaker_1"))
        wait_for_queue_depth(server.url, 1)
        long = pool.submit(post, server.url, body(80, "v2/en_speaker_2"))  # far more than the grace allows
        wait_for_queue_depth(server.url, 40)

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert not short.done(), "the short request must still be in flight when the signal comes"
        time.sleep(0.5)
        assert readiness(server.url) != 200, "not ready (or not listening) right after SIGTERM"

        assert short.result() == 200, "an in-flight request within the grace period completes"
        assert short.done() and time.monotonic() - signalled < GRACE_S
        server.process.wait(timeout=GRACE_S + EXIT_SLACK_S + 30)
        exited_after = time.monotonic() - signalled
        assert long.result() != 200, "a request past the grace period is cut off"
        assert exited_after < GRACE_S + EXIT_SLACK_S, f"exited {exited_after:.1f} s after SIGTERM"
        assert server.process.returncode == 0
        assert "draining in-flight requests" in server.log()


def test_a_stopped_model_never_loads_again():
    """KServe's get_model() calls load() on a not-ready model; after SIGTERM that must not reload Bark."""
    settings = Settings(warmup=False)
    engine = StubEngine(settings)
    model = stub_model(settings, engine)
    model.stop()
    assert model.load() is False
    assert model.service.engine is engine and not model.ready


def test_a_failed_device_turns_the_model_not_ready_and_sigterms_the_process(monkeypatch: pytest.MonkeyPatch):
    """A sticky CUDA error (illegal address, device-side assert) poisons the process: the model turns
    not ready at once and signals itself the SIGTERM a rollout would send (drain, exit, restart)."""
    settings = Settings(warmup=False)
    model = stub_model(settings, StubEngine(settings))
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    model.device_failed(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not model.ready and model.stopped
    assert signals == [(os.getpid(), signal.SIGTERM)]
    assert model.load() is False, "and it never loads again in this process"
