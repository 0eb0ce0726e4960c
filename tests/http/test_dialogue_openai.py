"""Dialogue and timestamps on the OpenAI speech route: the JSON answer, `speech.segment` events in an
SSE stream, the `openai` SDK with `extra_body`, and the 400s (OpenAI's error shape, naming the field)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
import soundfile as sf
import srt
from openai import OpenAI

SPEECH = "/v1/audio/speech"
RATE = 24_000
TURNS = [
    {"voice": "alloy", "text": "Hi! Did you hear the news today?"},
    {"voice": "v2/en_speaker_6", "text": "No. Tell me everything."},
]


def speech(server: Any, **body: Any) -> httpx.Response:
    return httpx.post(server.url + SPEECH, json={"model": "tts-1", "voice": "alloy", **body}, timeout=120)


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


def test_timestamps_make_the_answer_json_with_the_audio_segments_and_captions(server):
    response = speech(server, turns=TURNS, timestamps=True, captions="srt", response_format="wav", do_sample=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    audio, rate = sf.read(io.BytesIO(base64.b64decode(answer["audio"])))
    assert (rate, answer["format"]) == (RATE, "wav")
    assert len(audio) / RATE == pytest.approx(answer["duration_s"], abs=1e-4)
    segments = answer["segments"]
    assert segments[0]["voice"] == "v2/en_speaker_0", "an alias is named by its preset"
    assert {segment["turn"] for segment in segments} == {0, 1}
    assert segments[-1]["end_s"] == pytest.approx(answer["duration_s"], abs=320 / RATE)
    assert [cue.content.split() for cue in srt.parse(answer["captions"])] == [s["text"].split() for s in segments]


def test_speed_scales_the_times_with_the_audio(server):
    normal = speech(server, input="One. Two three.", timestamps=True, do_sample=False, response_format="wav").json()
    faster = speech(
        server, input="One. Two three.", timestamps=True, do_sample=False, response_format="wav", speed=2.0
    ).json()
    assert faster["duration_s"] == pytest.approx(normal["duration_s"] / 2, abs=1e-3)
    for slow, fast in zip(normal["segments"], faster["segments"], strict=True):
        assert fast["end_s"] == pytest.approx(slow["end_s"] / 2, abs=1e-4)


def test_an_sse_stream_sends_each_chunks_segments_just_before_its_audio(server):
    response = speech(
        server, turns=TURNS, timestamps=True, stream_format="sse", response_format="pcm", batch_chunk_size=4
    )
    assert response.status_code == 200, response.text
    events = sse_events(response)
    assert events[0]["type"] == "speech.segment", "the first chunk's times come before its audio"
    assert events[-1]["type"] == "speech.audio.done"
    heard = 0  # samples received so far
    pending: list[dict[str, Any]] = []
    chunks_seen = []
    for event in events[:-1]:
        if event["type"] == "speech.segment":
            assert set(event) == {"type", "turn", "voice", "text", "start_s", "end_s", "chunk", "exact"}
            pending.append(event)
            continue
        assert event["type"] == "speech.audio.delta"
        heard += len(base64.b64decode(event["audio"])) // 2
        assert pending, "every piece of audio is announced by its segments"
        assert round(pending[-1]["end_s"] * RATE) == heard, "a chunk's audio ends where its last segment does"
        chunks_seen.append({segment["chunk"] for segment in pending})
        pending = []
    assert chunks_seen == [{index} for index in range(len(chunks_seen))], "one chunk per piece, in order"
    assert len(chunks_seen) >= 3


def test_a_plain_sse_stream_has_no_segment_events(server):
    events = sse_events(speech(server, input="Hello there.", stream_format="sse", response_format="pcm"))
    assert {event["type"] for event in events} == {"speech.audio.delta", "speech.audio.done"}


def test_the_openai_sdk_sends_a_dialogue_with_extra_body(server):
    """The README's example: the SDK requires `input`, so a dialogue sends it empty."""
    client = OpenAI(base_url=f"{server.url}/v1", api_key="not-needed-without-auth")
    response = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="",
        response_format="wav",
        extra_body={"turns": TURNS, "turn_pause_ms": 500, "seed": 7},
    )
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == RATE and len(audio) > RATE // 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"turns": []}, "turns"),
        ({"turns": [{"text": "ok"}, {"text": ""}]}, "turns[1].text"),
        ({"turns": [{"text": "ok"}, {"text": "hi", "voice": "nobody"}]}, "turns[1].voice"),
        ({"turns": [{"text": "ok"}, {"text": "hi", "language": "xx"}]}, "turns[1].language"),
        ({"turns": [{"text": "hi"}] * 257}, "turns"),
        ({"turns": [{"text": "x" * 7_000}] * 3}, "turns"),
        ({"turns": [{"text": "hi"}], "input": "hi"}, "input"),
        ({"turns": [{"text": "hi"}], "turn_pause_ms": 9_999}, "turn_pause_ms"),
        ({"input": "hi", "timestamps": True, "stream": True, "response_format": "pcm"}, "timestamps"),
        ({"input": "hi", "captions": "vtt", "stream_format": "sse", "response_format": "pcm"}, "captions"),
    ],
)
def test_a_bad_dialogue_is_a_400_naming_the_field(server, body, param):
    response = speech(server, **body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
