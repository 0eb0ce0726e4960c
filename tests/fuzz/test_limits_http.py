"""The request limits over real HTTP, on the fuzz server's tight settings (tests/fuzz/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.fuzz.conftest import FUZZ_ENV, PREDICT
from tests.serving import RunningServer

BODY_LIMIT = int(FUZZ_ENV["BARK_MAX_BODY_BYTES"])


def words(count: int) -> str:
    return " ".join(["o"] * count)  # two characters a word: 120 words fit max_prompt_chars (300)


def test_body_over_max_body_bytes_is_a_413(fuzz_server: RunningServer):
    body = b'{"prompt": "' + b"x" * BODY_LIMIT + b'"}'
    response = httpx.post(fuzz_server.url + PREDICT, content=body, timeout=30)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]


def test_chunked_body_over_max_body_bytes_is_a_413(fuzz_server: RunningServer):
    def parts() -> Iterator[bytes]:  # no Content-Length: the server has to count
        yield b'{"prompt": "'
        for _ in range(BODY_LIMIT // 4096 + 2):
            yield b"x" * 4096
        yield b'"}'

    response = httpx.post(fuzz_server.url + PREDICT, content=parts(), timeout=30)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]


def test_words_over_max_words_per_request_is_a_400(fuzz_server: RunningServer):
    limit = int(FUZZ_ENV["BARK_MAX_WORDS_PER_REQUEST"])
    instances = [{"prompt": words(limit // 2 + 1)}, {"prompt": words(limit // 2)}]
    response = httpx.post(fuzz_server.url + PREDICT, json={"instances": instances}, timeout=30)
    assert response.status_code == 400
    assert "max_words_per_request" in response.json()["error"]


def test_estimated_audio_over_max_output_seconds_is_a_400(fuzz_server: RunningServer):
    # 2 semantic tokens per word: 110 words may make 220 tokens, 4.4 s of audio, over the 4 s limit.
    response = httpx.post(fuzz_server.url + PREDICT, json={"prompt": words(110)}, timeout=30)
    assert response.status_code == 400
    assert "max_output_seconds" in response.json()["error"]
    # 90 words (3.6 s at most) are within both limits.
    assert httpx.post(fuzz_server.url + PREDICT, json={"prompt": words(90)}, timeout=60).status_code == 200
