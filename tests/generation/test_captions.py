"""SRT and WebVTT captions, read back by standard parsers (`srt`, `webvtt-py`) and compared with the segments."""

from __future__ import annotations

import html
import io

import pytest
import srt
import webvtt
from hypothesis import given
from hypothesis import strategies as st

from bark_common.schema import Segment
from model_server.generation.captions import LINE_CHARS, captions, to_srt, to_vtt


def words(text: str) -> list[str]:
    return text.split()


def read_srt(text: str) -> list[tuple[float, float, str]]:
    return [(cue.start.total_seconds(), cue.end.total_seconds(), cue.content) for cue in srt.parse(text)]


def vtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_vtt(text: str) -> list[tuple[float, float, str, str | None]]:
    cues = webvtt.from_buffer(io.StringIO(text))
    return [(vtt_seconds(c.start), vtt_seconds(c.end), html.unescape(c.text), c.voice) for c in cues]


#: Caption clocks are in milliseconds: a time is rounded to the nearest one.
HALF_MS = 5e-4 + 1e-9


def matches(parsed_start: float, parsed_end: float, segment: Segment) -> bool:
    return parsed_start == pytest.approx(segment.start_s, abs=HALF_MS) and parsed_end == pytest.approx(
        segment.end_s, abs=HALF_MS
    )


SEGMENTS = [
    Segment(turn=0, voice="v2/en_speaker_1", text="Hello there.", start_s=0.0, end_s=1.2345, chunk=0, exact=True),
    Segment(
        turn=1,
        voice="v2/de_speaker_3",
        text="A longer answer that needs more than one line of caption text, so it wraps.",
        start_s=1.6,
        end_s=3661.0005,
        chunk=1,
        exact=False,
    ),
    Segment(
        turn=1, voice="v2/de_speaker_3", text="Tom & Jerry <3 --> end", start_s=3661.1, end_s=3662, chunk=1, exact=False
    ),
]


def test_srt_parses_and_matches_the_segments():
    parsed = read_srt(to_srt(SEGMENTS))
    assert len(parsed) == len(SEGMENTS)
    for (start, end, content), segment in zip(parsed, SEGMENTS, strict=True):
        assert matches(start, end, segment)
        assert words(content) == words(segment.text)
        assert all(len(line) <= LINE_CHARS for line in content.splitlines())
    assert "\n00:00:01,600 --> 01:01:01,000\n" in to_srt(SEGMENTS), "hours, minutes, seconds, milliseconds"


def test_vtt_parses_matches_the_segments_and_names_each_speaker_in_a_dialogue():
    parsed = read_vtt(to_vtt(SEGMENTS, voices=True))
    assert len(parsed) == len(SEGMENTS)
    for (start, end, text, voice), segment in zip(parsed, SEGMENTS, strict=True):
        assert matches(start, end, segment)
        assert words(text) == words(segment.text)
        assert voice == segment.voice
    assert all(voice is None for *_, voice in read_vtt(to_vtt(SEGMENTS)))


def test_captions_picks_the_format():
    assert captions(SEGMENTS, "vtt").startswith("WEBVTT\n")
    assert captions(SEGMENTS, "srt").startswith("1\n00:00:00,000 --> 00:00:01,234")


caption_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=120
).filter(lambda text: text.strip() != "")


@given(texts=st.lists(caption_text, min_size=1, max_size=6), voices=st.booleans())
def test_any_text_gives_captions_that_parse_back_to_it(texts, voices):
    """What the planner could hand over (any characters but line breaks, which it normalises away)."""
    segments = [
        Segment(
            turn=i,
            voice=f"v2/en_speaker_{i % 10}",
            text=" ".join(t.split()),
            start_s=i,
            end_s=i + 0.5,
            chunk=i,
            exact=True,
        )
        for i, t in enumerate(texts)
    ]
    srt_cues = read_srt(to_srt(segments))
    vtt_cues = read_vtt(to_vtt(segments, voices))
    assert len(srt_cues) == len(vtt_cues) == len(segments)
    for segment, (s_start, s_end, content), (v_start, v_end, text, voice) in zip(
        segments, srt_cues, vtt_cues, strict=True
    ):
        assert matches(s_start, s_end, segment) and matches(v_start, v_end, segment)
        assert words(content) == words(segment.text)
        assert words(text) == words(segment.text)
        assert voice == (segment.voice if voices else None)
