"""Issue #12 over real HTTP, on `python -m model_server` as a user starts it.

One server, configured only through the environment: the model is named by BARK_MODEL_NAME, API
keys are on, and the queue holds two chunks.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.serving import RunningServer, running_server

KEY = "hardening-key-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
FOUR_SENTENCES = " ".join(f"Sentence {n} has exactly ten words to fill the chunk up." for n in range(4))


@pytest.fixture(scope="module")
def tts_server(tiny_checkpoint, tmp_path_factory) -> Iterator[RunningServer]:
    env = {"BARK_MODEL_NAME": "tts", "BARK_API_KEYS": KEY, "BARK_MAX_QUEUE_CHUNKS": "2"}
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("hardening"), env=env) as server:
        yield server


def test_the_environment_names_the_model(tts_server):
    assert httpx.get(tts_server.url + "/v1/models/tts", timeout=10).json() == {"name": "tts", "ready": True}
    assert httpx.get(tts_server.url + "/v1/models/bark", timeout=10).status_code == 404


@pytest.mark.parametrize("headers", [{}, AUTH])
def test_unload_cannot_remove_the_model(tts_server, headers):
    with tts_server.client(timeout=60) as client:
        for action in ("unload", "load"):
            response = client.post(f"/v2/repository/models/tts/{action}", headers=headers)
            assert response.status_code == (404 if headers else 401), response.text
        assert "repository extension is off" in client.post("/v2/repository/models/tts/unload", headers=AUTH).text
        assert client.get("/v1/models/tts").json() == {"name": "tts", "ready": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2").json()["extensions"] == []
        response = client.post("/v1/models/tts:predict", json={"prompt": "Still here."}, headers=AUTH)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("stream", [{"stream": True}, {"stream_format": "sse"}])
def test_a_stream_longer_than_the_queue_is_a_400_not_an_empty_200(tts_server, stream):
    body = {"input": FOUR_SENTENCES, "response_format": "pcm", **stream}
    response = httpx.post(tts_server.url + "/v1/audio/speech", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "more than the queue holds" in error["message"]
    metrics = httpx.get(tts_server.url + "/metrics", timeout=10).text
    assert 'bark_requests_total{code="400",reason="invalid_input",route="openai_speech"}' in metrics
    assert 'code="200",reason="ok",route="openai_speech"' not in metrics
