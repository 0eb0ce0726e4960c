"""Request limits: body bytes (413), words per request and estimated output seconds (400), each named."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bark_common.errors import InvalidInput
from model_server.config import Settings
from model_server.generation.limits import check_output_seconds, estimated_output_seconds
from model_server.http.body_limit import BodySizeLimit
from model_server.schema import parse_predict_body
from tests.stub_engine import StubEngine, stub_model

LIMIT = 100


async def read_whole_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the middleware: reads the body like KServe's route, answers its length."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def post(parts: list[bytes], content_length: int | None) -> tuple[int, bytes, int]:
    """Send `parts` through BodySizeLimit; return (status, body, how many parts were read)."""
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/models/bark:predict", "headers": headers}
    queue = list(parts)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        part = queue.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(queue)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimit(read_whole_body, max_bytes=LIMIT)(scope, receive, send))
    status = sent[0]["status"]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return status, body, len(parts) - len(queue)


def test_declared_body_over_the_limit_is_a_413_without_reading_it():
    status, body, read = post([b"x" * 150], content_length=150)
    assert status == 413
    assert b"150 bytes" in body and b"max_body_bytes" in body
    assert read == 0


def test_streamed_body_over_the_limit_is_a_413_as_soon_as_it_passes():
    status, body, read = post([b"x" * 60, b"x" * 60, b"x" * 60, b"x" * 60], content_length=None)
    assert status == 413
    assert b"max_body_bytes" in body
    assert read == 2, "reading stops at the part that passes the limit"


def test_body_understating_its_length_is_still_refused():
    status, _, _ = post([b"x" * 80, b"x" * 80], content_length=10)
    assert status == 413


def test_body_at_the_limit_passes_whole():
    status, body, _ = post([b"x" * 50, b"x" * 50], content_length=None)
    assert (status, body) == (200, b"100")


def test_words_over_all_instances_are_limited_per_request():
    limited = Settings(max_words_per_request=10)
    six_words = {"prompt": "one two three four five six"}
    with pytest.raises(InvalidInput, match=r"12 words in total .* limit of 10 .*\(max_words_per_request\)"):
        parse_predict_body({"instances": [six_words, six_words]}, limited)
    assert len(parse_predict_body({"instances": [six_words, {"prompt": "one two three four"}]}, limited)) == 2


def test_output_estimate_is_semantic_tokens_over_49_9_per_second():
    assert estimated_output_seconds([499, 499]) == pytest.approx(20.0)
    check_output_seconds([499], limit_s=10)
    with pytest.raises(InvalidInput, match=r"up to 10\.0 s .* limit of 9 s \(max_output_seconds\)"):
        check_output_seconds([250, 250], limit_s=9)


def test_request_over_max_output_seconds_is_refused_before_anything_is_queued():
    # 25 tokens per word: 40 words are 1000 tokens, about 20 s of audio, over a 15 s limit.
    settings = Settings(warmup=False, max_output_seconds=15, semantic_tokens_per_word=25, semantic_tokens_min=1)
    engine = StubEngine(settings)
    text = " ".join(["Ten words are in this sentence, one two three four."] * 4)

    async def scenario() -> None:
        model = stub_model(settings, engine)
        with pytest.raises(InvalidInput, match=r"max_output_seconds"):
            await model({"instances": [{"prompt": text}]}, headers={})
        half = " ".join(text.split()[:20])
        response, _ = await model({"instances": [{"prompt": half}]}, headers={})
        assert response["predictions"][0]["chunks"] >= 1
        await model.service.close()

    asyncio.run(scenario())
    assert sum(len(text.split()) for call in engine.calls for text in call) == 20, "only the allowed request ran"
