"""API keys on the spending routes, open probes, and the per-request timeout (504)."""

from __future__ import annotations

import httpx
import pytest

from bark_common.api_keys import key_is_valid, load_api_keys, presented_key
from tests.serving import running_server

PREDICT = "/v1/models/bark:predict"
KEYS = ("first-key-0123456789", "second-key-9876543210")
LONG_TEXT = " ".join(["This sentence has exactly eight words in it."] * 30)


@pytest.fixture(scope="module")
def guarded_server(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guarded")
    key_file = folder / "api-keys"
    key_file.write_text(f"# mounted from a Secret\n{KEYS[0]}\n\n{KEYS[1]}\n")
    env = {
        "BARK_API_KEYS_FILE": str(key_file),
        "BARK_REQUEST_TIMEOUT_S": "4",
        "BARK_MAX_BATCH_SIZE": "1",
        "BARK_SEMANTIC_TOKENS_PER_WORD": "12",
    }
    with running_server(tiny_checkpoint, folder, env=env) as server:
        yield server


def short_body() -> dict:
    return {"instances": [{"prompt": "Let me in."}]}


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"authorization": f"Basic {KEYS[0]}"}],
)
def test_predict_without_a_valid_key_is_a_401(guarded_server, headers):
    response = httpx.post(guarded_server.url + PREDICT, json=short_body(), headers=headers, timeout=60)
    assert response.status_code == 401
    assert "API key" in response.json()["error"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [{"authorization": f"Bearer {KEYS[0]}"}, {"x-api-key": KEYS[1]}, {"Authorization": f"bearer {KEYS[1]}"}],
)
def test_predict_with_a_configured_key_is_served(guarded_server, headers):
    response = httpx.post(guarded_server.url + PREDICT, json=short_body(), headers=headers, timeout=60)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/", "/v1/models/bark", "/metrics", "/v1/audio/voices"])
def test_probes_metrics_and_voice_list_stay_open(guarded_server, path):
    assert httpx.get(guarded_server.url + path, timeout=10).status_code == 200


def test_keys_never_reach_the_log(guarded_server):
    assert all(key not in guarded_server.log() for key in KEYS)


def test_request_over_the_timeout_is_a_504_and_its_work_is_dropped(guarded_server):
    body = {"instances": [{"prompt": LONG_TEXT, "batch_chunk_size": 8}]}
    headers = {"x-api-key": KEYS[0]}
    response = httpx.post(guarded_server.url + PREDICT, json=body, headers=headers, timeout=60)
    assert response.status_code == 504
    assert "request_timeout_s" in response.json()["error"]
    follow_up = httpx.post(guarded_server.url + PREDICT, json=short_body(), headers=headers, timeout=60)
    assert follow_up.status_code == 200


def test_key_parsing_and_comparison(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("a-key\n# comment\n\nb-key\na-key\n")
    keys = load_api_keys(" c-key , ,", key_file)
    assert keys == ("c-key", "a-key", "b-key")
    assert key_is_valid("b-key", keys) and not key_is_valid("b-ke", keys) and not key_is_valid(None, keys)
    assert presented_key({"authorization": "Bearer tok"}) == "tok"
    assert presented_key({"x-api-key": "tok2"}) == "tok2"
    assert presented_key({"authorization": "Token tok"}) is None


def test_speech_route_needs_a_key_and_answers_in_openai_shape(guarded_server):
    body = {"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "wav"}
    refused = httpx.post(guarded_server.url + "/v1/audio/speech", json=body, timeout=60)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    allowed = httpx.post(
        guarded_server.url + "/v1/audio/speech", json=body, headers={"authorization": f"Bearer {KEYS[0]}"}, timeout=60
    )
    assert allowed.status_code == 200 and allowed.headers["content-type"] == "audio/wav"


def test_refused_keys_are_counted_as_401_outcomes(guarded_server):
    from tests.http.test_batching_http import metric

    series = 'bark_requests_total{code="401",reason="unauthorized",route="v1_predict"}'
    before = metric(guarded_server.url, series)
    httpx.post(guarded_server.url + PREDICT, json=short_body(), timeout=60)
    assert metric(guarded_server.url, series) == before + 1


def test_request_progress_needs_a_key_and_reports_a_finished_request(guarded_server):
    key = {"x-api-key": KEYS[0]}
    request_id = "progress-check-1"
    body = {"instances": [{"prompt": "One sentence here. And a second one."}, {"prompt": "A third."}]}
    answer = httpx.post(
        guarded_server.url + PREDICT, json=body, headers={**key, "x-request-id": request_id}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    chunks = sum(prediction["chunks"] for prediction in answer.json()["predictions"])
    path = f"{guarded_server.url}/v1/requests/{request_id}/progress"
    assert httpx.get(path, timeout=10).status_code == 401
    progress = httpx.get(path, headers=key, timeout=10)
    assert progress.status_code == 200, progress.text
    assert progress.json() | {"elapsed_s": 0} == {
        "request_id": request_id,
        "chunks_done": chunks,
        "chunks_total": chunks,
        "finished": True,
        "elapsed_s": 0,
    }
    unknown = httpx.get(f"{guarded_server.url}/v1/requests/never-sent/progress", headers=key, timeout=10)
    assert unknown.status_code == 404
    assert "never-sent" in unknown.json()["error"]
