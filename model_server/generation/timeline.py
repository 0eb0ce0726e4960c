"""Where every chunk and sentence sits in the joined audio: the silences between chunks, and segments.

A request's audio is its chunks in order with silence between them: `pause_ms` inside a turn,
`turn_pause_ms` where the speaker changes, nothing before the first or after the last. The server
does the joining, so a chunk's start and end are exact to the sample. Inside a chunk Bark gives no
alignment and there is no aligner here, so the sentences of a chunk of several are placed by their
share of its estimated speaking time (`text.speech_seconds`) and marked `exact: false`; a chunk of
one sentence (or one piece of a long sentence) is exact. Words are not placed.

`Timeline` places chunks one at a time, so a stream and a whole answer give the same times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bark_common.schema import Segment
from model_server.generation.audio import silence
from model_server.generation.text import TextChunk

#: Times are given to the microsecond: `round(start_s * sample_rate)` is then the very sample a chunk
#: starts at (at any rate up to 1 MHz), so a client can cut a turn out of the audio exactly.
DECIMALS = 6


@dataclass(frozen=True)
class SpokenChunk:
    """What timestamps need of a planned chunk: whose turn, which voice, its text and sentences."""

    turn: int
    voice: str
    text: str
    sentences: tuple[TextChunk, ...] = ()


class Timeline:
    """Chunks placed one after another as their audio arrives; times in seconds of the output.

    `speed` (the OpenAI route's resampling) divides every time: the audio is played that much faster.
    """

    def __init__(self, sample_rate: int, pause_ms: int, turn_pause_ms: int, speed: float = 1.0):
        self.sample_rate = sample_rate
        self.pause = len(silence(sample_rate, pause_ms))
        self.turn_pause = len(silence(sample_rate, turn_pause_ms))
        self.speed = speed
        self._cursor = 0  # samples before speed
        self._chunks = 0
        self._turn: int | None = None

    def gap_before(self, chunk: SpokenChunk) -> int:
        """Samples of silence before `chunk`, were it the next one."""
        if self._turn is None:
            return 0
        return self.pause if chunk.turn == self._turn else self.turn_pause

    def place(self, chunk: SpokenChunk, samples: int) -> tuple[int, list[Segment]]:
        """Put the next chunk, `samples` long, on the timeline: the silence before it and its segments."""
        gap = self.gap_before(chunk)
        start = self._cursor + gap
        end = start + samples
        segments = self._segments(chunk, self._chunks, start, end)
        self._cursor, self._turn = end, chunk.turn
        self._chunks += 1
        return gap, segments

    def _seconds(self, sample: int) -> float:
        return round(sample / self.sample_rate / self.speed, DECIMALS)

    def _segments(self, chunk: SpokenChunk, index: int, start: int, end: int) -> list[Segment]:
        sentences = chunk.sentences or (TextChunk(chunk.text, 1.0),)
        weights = [max(sentence.seconds, 0.0) for sentence in sentences]
        total = sum(weights)
        if total <= 0:  # nothing estimated: equal shares
            weights, total = [1.0] * len(sentences), float(len(sentences))
        bounds = [start]
        done = 0.0
        for weight in weights[:-1]:
            done += weight
            bounds.append(start + round((end - start) * done / total))
        bounds.append(end)
        exact = len(sentences) == 1
        return [
            Segment(
                turn=chunk.turn,
                voice=chunk.voice,
                text=sentence.text,
                start_s=self._seconds(bounds[i]),
                end_s=self._seconds(bounds[i + 1]),
                chunk=index,
                exact=exact,
            )
            for i, sentence in enumerate(sentences)
        ]


def join_chunks(
    parts: Sequence[np.ndarray], chunks: Sequence[SpokenChunk], timeline: Timeline
) -> tuple[np.ndarray, list[Segment]]:
    """The chunks' waveforms joined in order with their silences, and every chunk's segments."""
    pieces: list[np.ndarray] = []
    segments: list[Segment] = []
    for part, chunk in zip(parts, chunks, strict=True):
        waveform = np.asarray(part, dtype=np.float32).reshape(-1)
        gap, placed = timeline.place(chunk, len(waveform))
        if gap:
            pieces.append(np.zeros(gap, dtype=np.float32))
        pieces.append(waveform)
        segments.extend(placed)
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)), segments
