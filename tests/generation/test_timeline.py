"""The timeline: where chunks and sentences fall in the joined audio (pure functions, no model)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_server.generation.text import TextChunk, plan_chunks
from model_server.generation.timeline import SpokenChunk, Timeline, join_chunks

RATE = 24_000
FRAME_S = 320 / RATE  # one codec frame: Encodec's 75 Hz at 24 kHz


def spoken(turn: int, *sentences: tuple[str, float], voice: str = "v2/en_speaker_1") -> SpokenChunk:
    parts = tuple(TextChunk(text, seconds) for text, seconds in sentences)
    return SpokenChunk(turn, voice, " ".join(text for text, _ in sentences), parts)


def test_the_pause_inside_a_turn_and_the_turn_pause_between_speakers():
    chunks = [spoken(0, ("One.", 1)), spoken(0, ("Two.", 1)), spoken(1, ("Three.", 1), voice="v2/en_speaker_4")]
    parts = [np.ones(1000, np.float32), np.ones(2000, np.float32), np.ones(500, np.float32)]
    waveform, segments = join_chunks(parts, chunks, Timeline(RATE, pause_ms=100, turn_pause_ms=500))
    pause, turn_pause = RATE // 10, RATE // 2
    assert len(waveform) == 3500 + pause + turn_pause
    starts = [round(segment.start_s * RATE) for segment in segments]
    ends = [round(segment.end_s * RATE) for segment in segments]
    assert starts == [0, 1000 + pause, 3000 + pause + turn_pause]
    assert ends == [1000, 3000 + pause, len(waveform)]
    assert not waveform[1000 : 1000 + pause].any() and not waveform[3000 + pause : 3000 + pause + turn_pause].any()
    assert [segment.turn for segment in segments] == [0, 0, 1]
    assert segments[2].voice == "v2/en_speaker_4"
    assert [segment.chunk for segment in segments] == [0, 1, 2]
    assert all(segment.exact for segment in segments), "a chunk of one sentence is measured, not estimated"


def test_sentences_of_one_chunk_share_its_time_by_their_estimates_and_are_not_exact():
    chunk = spoken(0, ("Short.", 1.0), ("A sentence three times as long.", 3.0))
    _, segments = join_chunks([np.ones(4000, np.float32)], [chunk], Timeline(RATE, 150, 400))
    first, second = segments
    assert (first.start_s, second.end_s) == (0.0, round(4000 / RATE, 6))
    assert round(first.end_s * RATE) == round(second.start_s * RATE) == 1000
    assert not first.exact and not second.exact
    assert (first.text, second.text) == ("Short.", "A sentence three times as long.")


def test_times_are_for_the_resampled_audio_when_speed_changes():
    chunks = [spoken(0, ("One.", 1)), spoken(1, ("Two.", 1))]
    parts = [np.ones(RATE, np.float32), np.ones(RATE, np.float32)]
    _, normal = join_chunks(parts, chunks, Timeline(RATE, 0, 1000))
    _, faster = join_chunks(parts, chunks, Timeline(RATE, 0, 1000, speed=2.0))
    assert [s.end_s for s in normal] == [1.0, 3.0]
    assert [s.end_s for s in faster] == [0.5, 1.5]


def test_a_chunk_without_sentences_is_one_exact_segment_of_its_text():
    chunk = SpokenChunk(0, "v2/en_speaker_1", "Just text.")
    _, segments = join_chunks([np.ones(10, np.float32)], [chunk], Timeline(RATE, 150, 400))
    assert [(s.text, s.exact) for s in segments] == [("Just text.", True)]


@given(
    turns=st.lists(
        st.lists(st.tuples(st.integers(1, 5000), st.lists(st.floats(0.0, 20.0), min_size=1, max_size=4)), min_size=1),
        min_size=1,
        max_size=5,
    ),
    pause_ms=st.integers(0, 2000),
    turn_pause_ms=st.integers(0, 5000),
)
def test_segments_are_ordered_do_not_overlap_and_cover_the_audio_but_the_pauses(turns, pause_ms, turn_pause_ms):
    chunks, parts = [], []
    for turn, turn_chunks in enumerate(turns):
        for samples, weights in turn_chunks:
            chunks.append(spoken(turn, *((f"s{i}", w) for i, w in enumerate(weights))))
            parts.append(np.ones(samples, np.float32))
    timeline = Timeline(RATE, pause_ms, turn_pause_ms)
    waveform, segments = join_chunks(parts, chunks, timeline)
    bounds = [(round(s.start_s * RATE), round(s.end_s * RATE)) for s in segments]
    assert all(start <= end for start, end in bounds)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(bounds)), "ordered, never overlapping"
    # Inside a chunk its segments meet; between chunks lies exactly the silence the timeline put there.
    speech = np.zeros(len(waveform), bool)
    for start, end in bounds:
        speech[start:end] = True
    assert np.array_equal(speech, waveform != 0), "segments cover the audio and nothing but the pauses"
    assert segments[-1].end_s == pytest.approx(len(waveform) / RATE, abs=FRAME_S)
    assert bounds[-1][1] == len(waveform), "the last end is the audio's end (no trailing pause)"


def test_planned_sentences_cover_each_chunk_in_order():
    text = "Hello there! How are you today? I am fine... Thanks. A very long sentence, with clauses, goes on."
    for chunk in plan_chunks(text, 6):
        assert " ".join(sentence.text for sentence in chunk.sentences).split() == chunk.text.split()
        assert sum(sentence.seconds for sentence in chunk.sentences) == pytest.approx(chunk.seconds)
