"""Hypothesis-made bodies POSTed to the v1 and speech routes: every answer is a 200 or a 4xx, quickly; never a 5xx.

A streamed answer is held to the same rule: a refusal is a real 4xx (not a `200` with an empty
body), and a `200` stream ends cleanly with audio in it. Dialogues (`turns`, `turn_pause_ms`,
`timestamps`, `captions`) are mutated too; a `200` then has ordered segments and captions that a
standard parser reads.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import time
from typing import Any

import httpx
import pytest
import srt
import webvtt
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import PREDICT, assert_healthy
from tests.serving import RunningServer

#: One answer, valid or not, must come back within this (the fuzz server generates < 1 s of audio).
DEADLINE_S = 20.0

VALID_INSTANCE: dict[str, Any] = {
    "prompt": "Hello there. This is a short test.",
    "voice": "v2/en_speaker_1",
    "do_sample": False,
    "semantic_temperature": 0.7,
    "coarse_temperature": 0.7,
    "fine_temperature": 0.5,
    "batch_chunk_size": 10,
    "format": "wav",
    "seed": 7,
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
awkward_values = (
    json_values
    | st.integers(min_value=2**63, max_value=2**80)  # past int64 and uint32 (seed)
    | st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, 2.0000001])
    | st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=300)  # any unicode, no surrogates
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid instance with a few fields replaced, removed or added, sometimes wrapped oddly."""
    instance = dict(VALID_INSTANCE)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            instance[draw(st.sampled_from(sorted(VALID_INSTANCE)))] = draw(awkward_values)
        elif action == "remove" and instance:
            instance.pop(draw(st.sampled_from(sorted(instance))))
        else:
            instance[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    shape = draw(st.sampled_from(["instances", "flat", "many", "instances-not-list"]))
    if shape == "flat":
        return instance
    if shape == "many":
        return {"instances": [instance] * draw(st.integers(min_value=0, max_value=6))}
    if shape == "instances-not-list":
        return {"instances": instance}
    return {"instances": [instance]}


bodies = (
    mutated_bodies().map(lambda body: json.dumps(body).encode())
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.just(b'{"instances": [{"prompt": NaN}]}')
    | st.just(b'{"prompt": "\\ud800 lone surrogate"}')
    | st.binary(max_size=200)  # not JSON at all
)


@pytest.fixture(scope="module")
def client(fuzz_server: RunningServer) -> Any:
    with fuzz_server.client(timeout=DEADLINE_S + 10) as http:
        yield http


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_body_gets_a_200_or_a_4xx_in_time(client: httpx.Client, body: bytes) -> None:
    started = time.monotonic()
    response = client.post(PREDICT, content=body, headers={"content-type": "application/json"})
    elapsed = time.monotonic() - started
    event(f"status {response.status_code}")  # the mix shows with --hypothesis-show-statistics
    assert response.status_code < 500, f"{response.status_code} for {body[:300]!r}: {response.text[:500]}"
    assert elapsed < DEADLINE_S, f"{elapsed:.1f} s for {body[:300]!r}"
    if response.status_code == 200:
        predictions = response.json()["predictions"]
        assert all(prediction["duration_s"] > 0 for prediction in predictions)
    else:
        assert response.json()["error"], "a refusal says why"


VALID_SPEECH: dict[str, Any] = {
    "model": "tts-1",
    "input": "Hello there. This is a short test.",
    "voice": "alloy",
    "response_format": "pcm",
    "speed": 1.0,
    "stream": True,
}


@st.composite
def speech_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid streamed speech body with a few fields replaced, removed or added."""
    body = dict(VALID_SPEECH)
    body["stream_format"] = draw(st.sampled_from([None, "audio", "sse"]))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        action = draw(st.sampled_from(["replace", "remove", "add", "format"]))
        if action == "replace":
            body[draw(st.sampled_from(sorted(body)))] = draw(awkward_values)
        elif action == "remove" and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif action == "format":
            body["response_format"] = draw(st.sampled_from(["mp3", "opus", "wav", "pcm", "flac", "aac"]))
        else:
            body[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return {key: value for key, value in body.items() if value is not None or key != "stream_format"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=speech_bodies())
def test_any_streamed_speech_body_gets_a_4xx_or_a_complete_200(client: httpx.Client, body: dict[str, Any]) -> None:
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        data = response.read()  # an aborted transfer raises here
    event(f"status {response.status_code}")
    assert response.status_code < 500, f"{response.status_code} for {body}: {data[:500]!r}"
    if response.status_code == 200:
        assert data, f"an empty 200 for {body}"
        if response.headers["content-type"].startswith("text/event-stream"):
            assert b'"speech.audio.done"' in data and b'"type": "error"' not in data
    else:
        assert set(json.loads(data)["error"]) == {"message", "type", "param", "code"}


VALID_DIALOGUE: dict[str, Any] = {
    "turns": [
        {"voice": "v2/en_speaker_1", "text": "Hello there. How are you?"},
        {"voice": "v2/de_speaker_3", "text": "Guten Tag.", "language": "de"},
    ],
    "turn_pause_ms": 300,
    "timestamps": True,
    "captions": "vtt",
    "do_sample": False,
    "seed": 3,
}
DIALOGUE_ACTIONS = ["turn-replace", "turn-remove", "turn-add", "more-turns", "fewer-turns", "top-replace", "top-remove"]


@st.composite
def dialogue_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid dialogue with a few of its turns' fields, its turns or its new fields mutated."""
    body = copy.deepcopy(VALID_DIALOGUE)
    turns = body["turns"]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(DIALOGUE_ACTIONS))
        turn = turns[draw(st.integers(min_value=0, max_value=len(turns) - 1))] if turns else {}
        if action == "turn-replace":
            turn[draw(st.sampled_from(["voice", "text", "language"]))] = draw(awkward_values)
        elif action == "turn-remove" and turn:
            turn.pop(draw(st.sampled_from(sorted(turn))))
        elif action == "turn-add":
            turn[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif action == "more-turns":
            turns.extend(copy.deepcopy(turns[:1] or VALID_DIALOGUE["turns"][:1]) * draw(st.integers(1, 8)))
        elif action == "fewer-turns":
            del turns[: draw(st.integers(min_value=1, max_value=2))]
        elif action == "top-replace":
            key = draw(st.sampled_from(["turns", "turn_pause_ms", "timestamps", "captions", "prompt"]))
            body[key] = draw(awkward_values | st.sampled_from(["srt", "vtt", True, False, 0, 5_000]))
        else:
            body.pop(draw(st.sampled_from(sorted(body))), None)
    return body


def check_timed_prediction(prediction: dict[str, Any], body: dict[str, Any]) -> None:
    """Segments in order, ending with the audio; captions that a standard parser reads, one cue each."""
    segments = prediction.get("segments")
    if segments is not None:
        assert all(a["end_s"] <= b["start_s"] for a, b in itertools.pairwise(segments)), body
        # `duration_s` is rounded to 0.1 ms; the last segment ends with the audio (no trailing pause).
        assert abs(segments[-1]["end_s"] - prediction["duration_s"]) <= 5e-5 + 1e-6, body
    if "captions" in prediction:
        text = prediction["captions"]
        cues = list(webvtt.from_buffer(io.StringIO(text))) if text.startswith("WEBVTT") else list(srt.parse(text))
        assert cues, f"captions without a cue for {body}"
        if segments is not None:
            assert len(cues) == len(segments)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=dialogue_bodies(), flat=st.booleans())
def test_any_dialogue_gets_a_4xx_or_a_200_with_sound_timestamps(
    client: httpx.Client, body: dict[str, Any], flat: bool
) -> None:
    response = client.post(PREDICT, json=body if flat else {"instances": [body]})
    event(f"status {response.status_code}")
    assert response.status_code < 500, f"{response.status_code} for {body}: {response.text[:500]}"
    if response.status_code == 200:
        check_timed_prediction(response.json()["predictions"][0], body)
    else:
        assert response.json()["error"], "a refusal says why"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=dialogue_bodies(), stream=st.sampled_from([None, "sse", "audio"]))
def test_any_dialogue_on_the_speech_route_gets_a_4xx_or_a_complete_200(
    client: httpx.Client, body: dict[str, Any], stream: str | None
) -> None:
    speech = {"model": "tts-1", "voice": "alloy", "response_format": "pcm", **body}
    if stream is not None:
        speech["stream_format"] = stream
    with client.stream("POST", "/v1/audio/speech", json=speech) as response:
        data = response.read()
    event(f"status {response.status_code}")
    assert response.status_code < 500, f"{response.status_code} for {speech}: {data[:500]!r}"
    if response.status_code != 200:
        assert set(json.loads(data)["error"]) == {"message", "type", "param", "code"}
    elif response.headers["content-type"] == "application/json":
        check_timed_prediction(json.loads(data), speech)
    elif stream == "sse":
        assert b'"speech.audio.done"' in data and b'"type": "error"' not in data


def test_server_is_healthy_after_fuzzing(fuzz_server: RunningServer, client: httpx.Client) -> None:
    for body in (b"", b"{", b"[]", b"null", json.dumps({"instances": [VALID_INSTANCE]}).encode()):
        assert client.post(PREDICT, content=body).status_code < 500
    assert_healthy(fuzz_server)
