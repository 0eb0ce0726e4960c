"""Cross-request batching over real HTTP: own audio per request, 503 when full, disconnects dropped."""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time

import httpx
import pytest

from tests.serving import running_server

PREDICT = "/v1/models/bark:predict"
SENTENCE = "Here is one more sentence with eight words."


@pytest.fixture(scope="module")
def one_chunk_server(tiny_checkpoint, tmp_path_factory):
    """A server that runs one chunk at a time and queues at most 4: easy to fill."""
    # 12 semantic tokens per word: a chunk runs ~0.5 s, so the 0.3 s gaps below fall while the first
    # chunk still runs (a single continuous-loop row at 6 tokens/word can finish in 0.25 s).
    env = {
        "BARK_MAX_BATCH_SIZE": "1",
        "BARK_MAX_QUEUE_CHUNKS": "4",
        "BARK_RETRY_AFTER_S": "5",
        "BARK_SEMANTIC_TOKENS_PER_WORD": "12",
    }
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("one-chunk"), env=env) as server:
        yield server


def predict(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + PREDICT, json=body, timeout=120)


def body_of(sentences: int, voice: str) -> dict:
    prompt = " ".join([SENTENCE] * sentences)
    return {"instances": [{"prompt": prompt, "voice": voice, "batch_chunk_size": 8, "do_sample": False}]}


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if match:
            total += float(match.group(2))
    return total


def test_concurrent_requests_with_different_voices_each_get_their_own_audio(server):
    bodies = [body_of(1, "v2/en_speaker_0"), body_of(3, "v2/en_speaker_5"), body_of(2, "v2/en_speaker_0")]
    alone = [predict(server.url, body).json()["predictions"][0] for body in bodies]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        together = [r.json()["predictions"][0] for r in pool.map(lambda b: predict(server.url, b), bodies)]
    assert [p["chunks"] for p in together] == [1, 3, 2]
    assert [p["duration_s"] for p in together] == [p["duration_s"] for p in alone]


def test_requests_share_batches(server):
    before = metric(server.url, "bark_batch_size_sum"), metric(server.url, "bark_batch_size_count")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: predict(server.url, body_of(2, "v2/en_speaker_1")), range(4)))
    assert all(r.status_code == 200 for r in responses)
    chunks = metric(server.url, "bark_batch_size_sum") - before[0]
    batches = metric(server.url, "bark_batch_size_count") - before[1]
    assert chunks == 8
    assert batches < 8, "8 chunks of 4 concurrent requests should not run one by one"


def test_full_queue_answers_503_with_retry_after(one_chunk_server):
    url = one_chunk_server.url
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(predict, url, body_of(3, "v2/en_speaker_1"))
        time.sleep(0.3)
        second = pool.submit(predict, url, body_of(3, "v2/en_speaker_2"))
        statuses = {first.result().status_code, second.result().status_code}
        refused = first.result() if first.result().status_code == 503 else second.result()
    assert statuses == {200, 503}
    assert refused.headers["retry-after"] == "5"
    assert "busy" in refused.json()["error"]
    assert predict(url, body_of(1, "v2/en_speaker_1")).status_code == 200


def test_disconnected_client_chunks_are_dropped(one_chunk_server):
    url = one_chunk_server.url
    host, port = url.removeprefix("http://").split(":")
    cancelled_before = metric(url, 'bark_requests_total{code="499",reason="cancelled",route="v1_predict"}')
    payload = httpx.Request("POST", url + PREDICT, json=body_of(4, "v2/en_speaker_3")).content
    with socket.create_connection((host, int(port))) as connection:
        head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        connection.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (
            metric(url, "bark_queue_depth") == 0
            and metric(url, 'bark_requests_total{code="499",reason="cancelled",route="v1_predict"}') > cancelled_before
        ):
            break
        time.sleep(0.1)
    assert metric(url, "bark_queue_depth") == 0
    assert metric(url, 'bark_requests_total{code="499",reason="cancelled",route="v1_predict"}') == cancelled_before + 1
