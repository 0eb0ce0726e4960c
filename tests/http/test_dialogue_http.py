"""Dialogue, timestamps and captions on v1 predict, over real HTTP against the tiny checkpoint.

A turn cut out of a dialogue by its segments' times is the same audio as that turn asked for alone
(greedy and seeded); segments are ordered, do not overlap and cover the audio but the pauses; the
captions parse with standard parsers and say what the segments say; every bad turn is a 400 that
names it.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

PREDICT = "/v1/models/bark:predict"
RATE = 24_000
FRAME_S = 320 / RATE  # one codec frame (Encodec, 75 Hz)
TURN_PAUSE_MS = 300
PAUSE_MS = 150  # the server's default pause between chunks of one turn

TURNS: list[dict[str, Any]] = [
    {"voice": "v2/en_speaker_1", "text": "Hello there. How are you doing today?"},
    {"voice": "v2/en_speaker_6", "text": "Very well, thank you. And you?"},
    {"voice": "v2/en_speaker_1", "text": "Fine."},
]


def predict(server: Any, *instances: dict[str, Any]) -> list[dict[str, Any]]:
    with server.client() as client:
        response = client.post(PREDICT, json={"instances": list(instances)})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def samples(prediction: dict[str, Any]) -> np.ndarray:
    data, rate = sf.read(io.BytesIO(base64.b64decode(prediction["audio"])), dtype="int16")
    assert rate == RATE
    return data


def check_timeline(segments: list[dict[str, Any]], duration_s: float) -> None:
    """Ordered, never overlapping, and the last end is the audio's end (no trailing pause)."""
    assert segments, "timestamps were asked for"
    for segment in segments:
        assert 0 <= segment["start_s"] <= segment["end_s"] <= duration_s + 1e-6
    for before, after in itertools.pairwise(segments):
        assert before["end_s"] <= after["start_s"]
        assert before["chunk"] <= after["chunk"] and before["turn"] <= after["turn"]
    assert segments[-1]["end_s"] == pytest.approx(duration_s, abs=FRAME_S)


def test_a_dialogue_has_segments_in_turn_order_with_pauses_between_them(server):
    (prediction,) = predict(
        server, {"turns": TURNS, "timestamps": True, "turn_pause_ms": TURN_PAUSE_MS, "batch_chunk_size": 4}
    )
    segments = prediction["segments"]
    check_timeline(segments, prediction["duration_s"])
    assert {segment["turn"] for segment in segments} == {0, 1, 2}
    assert next(segment["voice"] for segment in segments if segment["turn"] == 1) == "v2/en_speaker_6"
    assert " ".join(s["text"] for s in segments).split() == " ".join(t["text"] for t in TURNS).split()
    assert prediction["chunks"] == segments[-1]["chunk"] + 1
    audio = samples(prediction)
    # The silences between chunks: `turn_pause_ms` where the speaker changes, `pause_ms` inside a turn.
    for before, after in itertools.pairwise(segments):
        if before["chunk"] == after["chunk"]:
            assert before["end_s"] == after["start_s"], "sentences of one chunk meet"
            continue
        gap_ms = (after["start_s"] - before["end_s"]) * 1000
        expected = TURN_PAUSE_MS if before["turn"] != after["turn"] else PAUSE_MS
        assert gap_ms == pytest.approx(expected, abs=0.1)
        assert not audio[round(before["end_s"] * RATE) : round(after["start_s"] * RATE)].any()


@pytest.mark.parametrize("sampling", [{"do_sample": False}, {"do_sample": True, "seed": 99}], ids=["greedy", "seeded"])
def test_each_turn_cut_from_a_dialogue_is_that_turn_requested_alone(server, sampling):
    common = {"batch_chunk_size": 4, **sampling}
    dialogue, *alone = predict(
        server,
        {"turns": TURNS, "timestamps": True, **common},
        *({"prompt": turn["text"], "voice": turn["voice"], **common} for turn in TURNS),
    )
    audio = samples(dialogue)
    for index, solo in enumerate(alone):
        segments = [segment for segment in dialogue["segments"] if segment["turn"] == index]
        start, end = round(segments[0]["start_s"] * RATE), round(segments[-1]["end_s"] * RATE)
        assert np.array_equal(audio[start:end], samples(solo)), f"turn {index}"


def test_a_prompt_has_turn_zero_and_a_plain_prediction_keeps_its_shape(server):
    timed, plain = predict(
        server,
        {"prompt": "One sentence here. And a second one.", "timestamps": True, "do_sample": False},
        {"prompt": "Nothing extra asked.", "do_sample": False},
    )
    assert {segment["turn"] for segment in timed["segments"]} == {0}
    assert all(segment["voice"] == "v2/en_speaker_1" for segment in timed["segments"])
    check_timeline(timed["segments"], timed["duration_s"])
    assert set(plain) == {"audio", "format", "sample_rate", "duration_s", "chunks"}


def test_captions_parse_with_standard_parsers_and_match_the_segments(server):
    body = {"turns": TURNS, "timestamps": True, "do_sample": False, "batch_chunk_size": 4}
    as_srt, as_vtt = predict(server, {**body, "captions": "srt"}, {**body, "captions": "vtt"})
    assert as_srt["segments"] == as_vtt["segments"], "greedy: the same audio and times"
    segments = as_srt["segments"]
    cues = list(srt.parse(as_srt["captions"]))
    assert len(cues) == len(segments)
    for cue, segment in zip(cues, segments, strict=True):
        assert cue.start.total_seconds() == pytest.approx(segment["start_s"], abs=5e-4 + 1e-9)
        assert cue.end.total_seconds() == pytest.approx(segment["end_s"], abs=5e-4 + 1e-9)
        assert cue.content.split() == segment["text"].split()
    captions = webvtt.from_buffer(io.StringIO(as_vtt["captions"]))
    assert len(captions) == len(segments)
    for caption, segment in zip(captions, segments, strict=True):
        hours, minutes, seconds = caption.start.split(":")
        assert int(hours) * 3600 + int(minutes) * 60 + float(seconds) == pytest.approx(segment["start_s"], abs=5e-4)
        assert html.unescape(caption.text).split() == segment["text"].split()
        assert caption.voice == segment["voice"], "a dialogue's cues name their speaker"


def test_captions_alone_come_without_segments(server):
    (prediction,) = predict(server, {"prompt": "Just captions, please.", "captions": "srt"})
    assert "segments" not in prediction
    assert len(list(srt.parse(prediction["captions"]))) == 1


def test_the_flat_body_takes_turns_too(server):
    with server.client() as client:
        response = client.post(PREDICT, json={"turns": TURNS[:2], "timestamps": True})
    assert response.status_code == 200, response.text
    assert {segment["turn"] for segment in response.json()["predictions"][0]["segments"]} == {0, 1}


BAD_TURNS = [
    ({"turns": []}, "instances[0].turns"),
    ({"turns": "Hello"}, "instances[0].turns"),
    ({"turns": [{"text": ""}]}, "instances[0].turns[0].text"),
    ({"turns": [{"text": "ok"}, {"text": "   "}]}, "instances[0].turns[1].text"),
    ({"turns": [{"text": "ok"}, {"text": "... !!"}]}, "instances[0].turns[1].text"),
    ({"turns": [{"text": "ok"}, {"voice": "alloy"}]}, "instances[0].turns[1].text"),
    ({"turns": [{"text": 7}]}, "instances[0].turns[0].text"),
    ({"turns": [{"text": "ok"}, {"text": "hi", "voice": "v2/xx_speaker_9"}]}, "instances[0].turns[1].voice"),
    ({"turns": [{"text": "ok"}, {"text": "hi", "language": "klingon"}]}, "instances[0].turns[1].language"),
    ({"turns": [{"text": "hi", "speaker": "Ann"}]}, "instances[0].turns[0].speaker"),
    ({"turns": [{"text": "hi"}], "voice": "nobody"}, "instances[0].voice"),
    ({"turns": [{"text": "hi"}], "prompt": "hi"}, "instances[0].prompt"),
    ({"voice": "v2/en_speaker_1"}, "instances[0].prompt"),
    ({"turns": [{"text": "hi"}] * 257}, "instances[0].turns"),
    ({"turns": [{"text": "x" * 7_000}] * 3}, "instances[0].turns"),
    ({"turns": [{"text": "hi"}], "turn_pause_ms": -1}, "instances[0].turn_pause_ms"),
    ({"turns": [{"text": "hi"}], "turn_pause_ms": 60_000}, "instances[0].turn_pause_ms"),
    ({"prompt": "hi", "captions": "ass"}, "instances[0].captions"),
    ({"prompt": "hi", "timestamps": "yes"}, "instances[0].timestamps"),
]


@pytest.mark.parametrize(("instance", "field"), BAD_TURNS)
def test_a_bad_turn_is_a_400_naming_it(server, instance, field):
    with server.client() as client:
        response = client.post(PREDICT, json={"instances": [instance]})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}:"), response.json()["error"]


def test_too_many_turns_and_too_long_in_all_say_which_limit(server):
    with server.client() as client:
        many = client.post(PREDICT, json={"instances": [{"turns": [{"text": "hi"}] * 257}]}).json()["error"]
        long = client.post(PREDICT, json={"instances": [{"turns": [{"text": "x" * 7_000}] * 3}]}).json()["error"]
        words = [{"turns": [{"text": "a " * 2_600}] * 2}] * 2
        wordy = client.post(PREDICT, json={"instances": words}).json()["error"]
    assert "257 turns" in many and "max_turns" in many
    assert "21000 characters in all" in long and "max_prompt_chars" in long
    assert wordy.startswith("instances:") and "max_words_per_request" in wordy
