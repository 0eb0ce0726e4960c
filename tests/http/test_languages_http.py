"""Chinese and Japanese over real HTTP on the tiny checkpoint: several chunks, audio as long as budgets allow."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
import soundfile as sf

from model_server.generation.text import plan_chunks, semantic_budget
from tests.language_samples import LONG_JA, LONG_ZH
from tests.serving import FAST_GENERATION_ENV

PREDICT = "/v1/models/bark:predict"
SPEECH = "/v1/audio/speech"
RATE = 24_000
HOP = 320  # EnCodec 24 kHz: samples per codec frame
PAUSE_S = 0.15  # Settings.pause_ms between chunks
CASES = [("zh", LONG_ZH, "v2/zh_speaker_1"), ("ja", LONG_JA, "v2/ja_speaker_2")]


def expected_seconds(text: str, language: str) -> tuple[int, float]:
    """Chunks and audio seconds when each chunk runs to its budget (random weights do), at the test
    server's FAST_GENERATION_ENV budgets; the engine test pins the token-to-sample arithmetic."""
    per_word, minimum = (float(FAST_GENERATION_ENV[f"BARK_SEMANTIC_TOKENS_{key}"]) for key in ("PER_WORD", "MIN"))
    chunks = plan_chunks(text, 20, language)
    frames = [int(semantic_budget(c.seconds, per_word, int(minimum), 768) * 75 / 49.9) for c in chunks]
    return len(chunks), sum(frames) * HOP / RATE + PAUSE_S * (len(chunks) - 1)


@pytest.mark.parametrize(("language", "text", "voice"), CASES)
def test_v1_predict_speaks_a_long_paragraph_in_several_chunks(server, language, text, voice):
    chunks, seconds = expected_seconds(text, language)
    body = {"instances": [{"prompt": text, "voice": voice, "do_sample": False, "seed": 3}]}
    with server.client() as client:
        response = client.post(PREDICT, json=body)
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["chunks"] == chunks >= 3
    assert prediction["duration_s"] > 1
    assert prediction["duration_s"] == pytest.approx(seconds, abs=0.05)
    samples, _ = sf.read(io.BytesIO(base64.b64decode(prediction["audio"])))
    assert len(samples) / RATE == pytest.approx(prediction["duration_s"], abs=1e-3)


@pytest.mark.parametrize(("language", "text", "voice"), CASES)
def test_openai_speech_speaks_the_same_paragraph_as_long(server, language, text, voice):
    _, seconds = expected_seconds(text, language)
    body = {"model": "bark", "input": text, "voice": voice, "response_format": "wav"}
    response = httpx.post(server.url + SPEECH, json=body, timeout=120)
    assert response.status_code == 200, response.text
    samples, rate = sf.read(io.BytesIO(response.content))
    assert rate == RATE
    assert len(samples) / rate > 1
    assert len(samples) / rate == pytest.approx(seconds, abs=0.05)


def test_the_language_field_overrides_the_voice_on_both_apis(server):
    """An English preset reading Chinese: chunked and budgeted as Chinese."""
    _, seconds = expected_seconds(LONG_ZH, "zh")
    instance = {"prompt": LONG_ZH, "voice": "v2/en_speaker_1", "language": "zh", "do_sample": False}
    with server.client() as client:
        predicted = client.post(PREDICT, json={"instances": [instance]})
        spoken = client.post(
            SPEECH, json={"input": "你好。", "voice": "alloy", "language": "zh-CN", "response_format": "wav"}
        )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"][0]["duration_s"] == pytest.approx(seconds, abs=0.05)
    assert spoken.status_code == 200, spoken.text


@pytest.mark.parametrize("route", [PREDICT, SPEECH])
def test_a_language_bark_does_not_speak_is_a_400_naming_the_field(server, route):
    body = (
        {"instances": [{"prompt": "Hallo.", "language": "nl"}]}
        if route == PREDICT
        else {"input": "Hallo.", "voice": "alloy", "language": "nl"}
    )
    with server.client() as client:
        response = client.post(route, json=body)
    assert response.status_code == 400
    assert "language" in response.text and "Bark's languages" in response.text


def test_voices_list_every_language_with_its_name(server):
    with server.client() as client:
        voices = client.get("/v1/audio/voices").json()["voices"]
    assert {"name": "v2/zh_speaker_1", "language": "zh", "language_name": "Chinese"} in voices
    assert {"name": "v2/hi_speaker_9", "language": "hi", "language_name": "Hindi"} in voices
    assert len(voices) == 130
