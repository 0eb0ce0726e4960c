"""Segments as caption files: SubRip (SRT) and WebVTT, one cue per segment.

Both formats are a few lines of text per cue, so they are written here rather than through a
library; the tests read them back with standard parsers (`srt`, `webvtt-py`). Cue text is wrapped
at `LINE_CHARS`, the usual subtitle line length; WebVTT escapes `&`, `<` and `>` (so a text holding
`-->` cannot end a cue early) and, for a dialogue, names each cue's voice with a `<v>` span.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from bark_common.schema import CaptionFormat, Segment

#: Characters per caption line (the common subtitle guideline is 37 to 42).
LINE_CHARS = 42


def _clock(seconds: float, separator: str) -> str:
    """`HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def _lines(text: str) -> list[str]:
    """The cue text on lines of at most LINE_CHARS (a longer word, or CJK text without spaces, stays whole)."""
    return textwrap.wrap(" ".join(text.split()), LINE_CHARS, break_long_words=False, break_on_hyphens=False) or [""]


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    cues = []
    for number, segment in enumerate(segments, start=1):
        timing = f"{_clock(segment.start_s, ',')} --> {_clock(segment.end_s, ',')}"
        cues.append("\n".join([str(number), timing, *_lines(segment.text)]) + "\n")
    return "\n".join(cues)


def to_vtt(segments: Sequence[Segment], voices: bool = False) -> str:
    """WebVTT; with `voices`, each cue's text is in a `<v voice>` span (a dialogue's speakers)."""
    cues = ["WEBVTT\n"]
    for number, segment in enumerate(segments, start=1):
        timing = f"{_clock(segment.start_s, '.')} --> {_clock(segment.end_s, '.')}"
        lines = [_vtt_escape(line) for line in _lines(segment.text)]
        if voices:
            lines[0] = f"<v {_vtt_escape(segment.voice)}>{lines[0]}"
        cues.append("\n".join([str(number), timing, *lines]) + "\n")
    return "\n".join(cues)


def captions(segments: Sequence[Segment], fmt: CaptionFormat, voices: bool = False) -> str:
    """The segments as `fmt` captions (`voices`: name the speaker of each cue where the format can)."""
    return to_vtt(segments, voices) if fmt == "vtt" else to_srt(segments)
