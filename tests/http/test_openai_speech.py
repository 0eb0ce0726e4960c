"""The OpenAI-compatible speech route over real HTTP: the official SDK, formats, speed, streaming, errors."""

from __future__ import annotations

import base64
import io
import json
import time

import av
import httpx
import pytest
import soundfile as sf
from openai import OpenAI

from model_server.config import Settings
from model_server.http.openai_speech.serving import SpeechService
from tests.stub_engine import StubEngine, stub_service

SPEECH = "/v1/audio/speech"
TEXT = "Hello there. This is a test of the speech route. It has three sentences."
LONG_TEXT = " ".join(f"Sentence number {n} is here to make the text longer." for n in range(1, 9))


def seconds_of(data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return len(data) / 2 / 24_000
    if fmt == "aac":
        with av.open(io.BytesIO(data)) as container:
            return sum(frame.samples for frame in container.decode(audio=0)) / 24_000
    samples, rate = sf.read(io.BytesIO(data))
    assert rate == 24_000
    return len(samples) / rate


def speech(server, **body) -> httpx.Response:
    return httpx.post(
        server.url + SPEECH, json={"model": "tts-1", "input": TEXT, "voice": "alloy", **body}, timeout=120
    )


@pytest.fixture(scope="module")
def reference_seconds(server) -> float:
    """The same text through v1 predict: the speech route must produce the same audio length."""
    body = {"instances": [{"prompt": TEXT, "voice": "v2/en_speaker_0"}]}
    return httpx.post(server.url + "/v1/models/bark:predict", json=body, timeout=120).json()["predictions"][0][
        "duration_s"
    ]


def test_official_openai_sdk_gets_a_playable_file(server, reference_seconds):
    client = OpenAI(base_url=f"{server.url}/v1", api_key="not-needed-without-auth")
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav")
    assert seconds_of(response.content, "wav") == pytest.approx(reference_seconds, abs=1e-3)


def test_official_openai_sdk_streams(server):
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x")
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="nova", input=TEXT, response_format="mp3", extra_body={"stream": True}
    ) as response:
        data = b"".join(response.iter_bytes())
    assert seconds_of(data, "mp3") > 1.0


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg; codecs=opus"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
        ("pcm", "audio/pcm"),
    ],
)
def test_each_format_has_its_content_type_and_decodes_to_the_right_length(server, reference_seconds, fmt, content_type):
    response = speech(server, response_format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert seconds_of(response.content, fmt) == pytest.approx(reference_seconds, abs=0.12)


def test_speed_changes_the_duration(server, reference_seconds):
    response = speech(server, response_format="wav", speed=2.0)
    assert seconds_of(response.content, "wav") == pytest.approx(reference_seconds / 2, abs=0.01)


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus"])
def test_streaming_sends_audio_before_the_whole_text_is_generated(server, fmt):
    body = {"model": "bark", "input": LONG_TEXT, "voice": "v2/en_speaker_2", "response_format": fmt, "stream": True}
    started = time.perf_counter()
    pieces: list[tuple[float, bytes]] = []
    with httpx.stream("POST", server.url + SPEECH, json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        for piece in response.iter_raw():
            pieces.append((time.perf_counter() - started, piece))
    total = pieces[-1][0]
    first_audio = next(at for at, piece in pieces if piece)
    assert len(pieces) >= 3
    assert first_audio < 0.6 * total, f"first audio after {first_audio:.2f} s of {total:.2f} s"
    assert seconds_of(b"".join(piece for _, piece in pieces), fmt) > 3.0


def test_sse_stream_carries_base64_deltas_then_done(server):
    body = {"input": TEXT, "voice": "echo", "response_format": "pcm", "stream_format": "sse"}
    response = httpx.post(server.url + SPEECH, json=body, timeout=120)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    deltas = [event for event in events if event["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2
    audio = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    assert seconds_of(audio, "pcm") > 1.0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"voice": "alloy"}, "input"),
        ({"input": "   "}, "input"),
        ({"input": "... !!! ..."}, "input"),
        ({"input": "hi", "voice": "not-a-voice"}, "voice"),
        ({"input": "hi", "speed": 5}, "speed"),
        ({"input": "hi", "speed": 0.1}, "speed"),
        ({"input": "hi", "response_format": "ogg"}, "response_format"),
        ({"input": "hi", "response_format": "flac", "stream": True}, "response_format"),
        ({"input": "hi", "response_format": "aac", "stream_format": "sse"}, "response_format"),
        ({"input": 42}, "input"),
        ({"input": "hi", "colour": "blue"}, "colour"),
        ({"input": "hi", "seed": -1}, "seed"),
        ({"input": "hi", "fine_temperature": 5}, "fine_temperature"),
        ({"input": "hi", "do_sample": "yes"}, "do_sample"),
        ({"input": "hi", "batch_chunk_size": 1}, "batch_chunk_size"),
    ],
)
def test_bad_input_is_a_400_in_openai_error_shape(server, body, param):
    response = httpx.post(server.url + SPEECH, json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_bark_sampling_extensions_reach_the_synthesis_request():
    """Bark's own settings ride along OpenAI's body (the SDK's `extra_body`) into what is generated.

    (Checked on the plan: the tiny checkpoint's random codec makes audio a weak witness of a seed.)
    """
    settings = Settings(warmup=False)
    service = SpeechService(stub_service(settings, StubEngine(settings)))
    bark = {"seed": 7, "do_sample": False, "semantic_temperature": 0.9, "fine_temperature": 0.3}
    plan = service.plan({"input": TEXT * 3, "voice": "alloy", **bark, "batch_chunk_size": 5}, "r1")
    assert plan.synthesis.model_dump(include=set(bark)) == bark
    assert plan.synthesis.batch_chunk_size == 5
    default = service.plan({"input": TEXT * 3, "voice": "alloy"}, "r2")
    assert len(plan.plan.chunks) > len(default.plan.chunks), "a smaller batch_chunk_size makes more chunks"
    assert (default.synthesis.seed, default.synthesis.do_sample) == (None, True)


def test_body_that_is_not_json_is_a_400_in_openai_shape(server):
    response = httpx.post(server.url + SPEECH, content=b"{oops", timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_voices_list_presets_with_language_and_the_openai_aliases(server):
    for path in ("/v1/audio/voices", "/v1/models/bark/voices"):
        listing = httpx.get(server.url + path, timeout=10).json()
        assert {"name": "v2/en_speaker_4", "language": "en", "language_name": "English"} in listing["voices"]
        assert listing["aliases"]["alloy"] == "v2/en_speaker_0"


@pytest.mark.parametrize("fmt", ["mp3", "opus", "pcm"])
def test_v1_predict_accepts_the_same_formats(server, fmt):
    body = {"instances": [{"prompt": "Format check.", "format": fmt}]}
    prediction = httpx.post(server.url + "/v1/models/bark:predict", json=body, timeout=120).json()["predictions"][0]
    assert prediction["format"] == fmt
    assert seconds_of(base64.b64decode(prediction["audio"]), fmt) == pytest.approx(prediction["duration_s"], abs=0.12)
