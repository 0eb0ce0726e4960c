"""Spoken length and chunks, in every language Bark speaks: pure functions, no model.

Bark speaks at most ~13 s per generation, so long text is cut into chunks. Cutting at sentence
ends keeps prosody natural; cutting every N words (as the original API did) breaks sentences, and
counting whitespace words makes a Chinese paragraph "one word".

Sentences come from sentences.py (a segmenter per language, chosen by measurement).

Length: estimated speaking time (languages.py), counted in "words": whitespace words for languages
written with spaces, and the same speaking time (0.4 s, the English word) for zh, ja and ko.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import regex

from model_server.generation.languages import DEFAULT_LANGUAGE, LANGUAGES, WORD_EQUIVALENT_PER_SECOND
from model_server.generation.sentences import (
    Span,
    normalise_space,
    regex_split_sentences,
    sentence_spans,
    sentence_splitter,
    spans_between,
    split_sentences,
)

__all__ = [
    "MAX_CHUNK_SECONDS",
    "TextChunk",
    "chunk_limit",
    "chunk_text",
    "length_in_words",
    "pack_chunks",
    "plan_chunks",
    "regex_split_sentences",
    "request_words",
    "semantic_budget",
    "sentence_splitter",
    "speech_seconds",
    "split_sentences",
]

logger = logging.getLogger(__name__)

#: Bark's comfortable length for one generation; a chunk's estimated speech stays under it.
MAX_CHUNK_SECONDS = 13.0
#: A run of letters longer than this (no spaces: a URL, an unspaced script) counts as several words.
LONG_WORD_CHARS = 20
_EPSILON = 1e-9

# Where an over-long sentence may be cut before a hard cut: after a clause mark (an ASCII one only
# when a space follows, so that 2,5 and 15:30 stay whole).
_CLAUSE_END = re.compile(r"[,;:](?=\s)\s*|[，、；：]\s*|\s[—–](?=\s)\s*")
_TOKEN = re.compile(r"\S+\s*")
# Inside a word: each Han, kana or Hangul character (with the marks after it) is a piece, and so is
# each run of other characters ("3.5" in 票价是3.5元 stays whole).
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}ー]"  # the characters _script() knows
_ATOM = regex.compile(rf"{_CJK}[^\w\s]*|(?:(?!{_CJK})\S)+")


# -- spoken length ---------------------------------------------------------------------------------
_KOREAN = regex.compile(r"[\p{Hangul}]")
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}ー]")
_HAN = regex.compile(r"[\p{Han}]")


@functools.lru_cache(maxsize=65_536)
def _script(char: str) -> str | None:
    """`ko`, `ja` or `zh` for a character read one by one (Hangul, kana, Han); None for others."""
    if _KOREAN.match(char):
        return "ko"
    if _KANA.match(char):
        return "ja"
    return "zh" if _HAN.match(char) else None


def _char_rate(char: str, language: str) -> float | None:
    """Characters per second of a Hangul, kana or Han character (Han at the Japanese pace in Japanese)."""
    script = _script(char)
    if script is None:
        return None
    return LANGUAGES["ja" if script == "zh" and language == "ja" else script].chars_per_second


def _is_word_char(char: str) -> bool:
    return char.isalnum() or unicodedata.category(char).startswith("M")


def length_in_words(text: str, language: str = DEFAULT_LANGUAGE) -> float:
    """Estimated speaking time of `text`, in words of `language`: each whitespace word with a letter or
    digit is one (a run over LONG_WORD_CHARS letters counts per LONG_WORD_CHARS), each Han, kana or
    Hangul character its share of a second, converted at the language's words per second."""
    words_per_second = LANGUAGES[language].words_per_second
    words = 0.0
    for token in text.split():
        other = 0
        for char in token:
            rate = _char_rate(char, language)
            if rate is not None:
                words += words_per_second / rate
            elif _is_word_char(char):
                other += 1
        if other:
            words += max(1.0, other / LONG_WORD_CHARS)
    return words


def speech_seconds(text: str, language: str = DEFAULT_LANGUAGE) -> float:
    """Estimated seconds Bark needs to say `text` in `language`."""
    return length_in_words(text, language) / LANGUAGES[language].words_per_second


def request_words(text: str, language: str = DEFAULT_LANGUAGE) -> float:
    """`text` in the unit of `max_words_per_request` and `batch_chunk_size`: words where words are
    spaced, the English word's 0.4 s of speech (2.5 per second) in Chinese, Japanese and Korean."""
    if LANGUAGES[language].chars_per_second is None:
        return length_in_words(text, language)
    return speech_seconds(text, language) * WORD_EQUIVALENT_PER_SECOND


def semantic_budget(seconds: float, tokens_per_word: float, minimum: int, maximum: int) -> int:
    """Semantic tokens for a chunk of `seconds` estimated speech: `tokens_per_word` per English word's
    time (0.4 s), so the default 25 is 62.4 tokens per second, Bark's 49.9 with a 25 % margin."""
    wanted = math.ceil(seconds * WORD_EQUIVALENT_PER_SECOND * tokens_per_word - _EPSILON)
    return max(1, min(maximum, max(minimum, wanted)))


# -- chunks ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextChunk:
    """One generation's text and how long it is estimated to take to say.

    `sentences`: the sentences in it (or the piece of one cut over several chunks), each with its
    own estimate: timestamps place them inside the chunk's audio by their share of its time.
    """

    text: str
    seconds: float
    sentences: tuple[TextChunk, ...] = ()


def _balanced(pieces: list[Span], weights: list[float], limit: float) -> list[Span]:
    """Consecutive pieces merged into as few runs as `limit` allows, cut where the running weight is
    nearest to each equal share, so no run is a lone tail; none over `limit` unless a piece alone is."""
    total = sum(weights)
    target = total / max(1, math.ceil(total / limit - _EPSILON))
    runs: list[Span] = []
    current: Span | None = None
    done = weight = 0.0
    for piece, piece_weight in zip(pieces, weights, strict=True):
        if current is not None and weight + piece_weight > limit + _EPSILON:
            runs.append(current)
            current, done, weight = None, done + weight, 0.0
        current = piece if current is None else (current[0], piece[1])
        weight += piece_weight
        if done + weight >= (len(runs) + 1) * target - piece_weight / 2 - _EPSILON and weight > _EPSILON:
            runs.append(current)
            current, done, weight = None, done + weight, 0.0
    if current is not None:
        if runs and weight <= _EPSILON:  # a trailing mark with nothing to say joins the run before it
            runs[-1] = (runs[-1][0], current[1])
        else:
            runs.append(current)
    return runs


def _pieces(text: str, span: Span, pattern: re.Pattern[str] | regex.Pattern[str]) -> list[Span]:
    start, end = span
    cuts = [start + match.end() for match in pattern.finditer(text[start:end])]
    return spans_between(start, cuts, end)


def _cut_long(text: str, span: Span, language: str, limit: float) -> list[Span]:
    """An over-long sentence: cut at clause marks, then between words, then between characters."""
    for pattern in (_CLAUSE_END, _TOKEN, _ATOM):
        pieces = _pieces(text, span, pattern)
        if len(pieces) > 1:
            if pattern is _CLAUSE_END:
                return _pack(text, pieces, language, limit)
            weights = [length_in_words(text[a:b], language) for a, b in pieces]
            balanced = _balanced(pieces, weights, limit)
            if balanced == [span]:  # no cut this way (one long word and a trailing space): a finer one
                continue
            runs: list[Span] = []
            for run in balanced:  # each shorter than the span, so the recursion ends
                too_long = length_in_words(text[run[0] : run[1]], language) > limit + _EPSILON
                runs.extend(_cut_long(text, run, language, limit) if too_long else [run])
            return runs
    # One run of letters longer than the limit (a URL, an unspaced script): cut between graphemes,
    # each letter 1/LONG_WORD_CHARS of a word as length_in_words counts it.
    start, end = span
    graphemes = spans_between(start, (start + match.end() for match in regex.finditer(r"\X", text[start:end])), end)
    weights = [1 / LONG_WORD_CHARS if any(map(_is_word_char, text[a:b])) else 0.0 for a, b in graphemes]
    return _balanced(graphemes, weights, limit)


def _pack(text: str, spans: Iterable[Span], language: str, limit: float) -> list[Span]:
    """Whole spans packed in order into runs up to `limit` words; an over-long span is cut first."""
    runs: list[Span] = []
    current: Span | None = None
    weight = 0.0
    for span in spans:
        span_weight = length_in_words(text[span[0] : span[1]], language)
        if span_weight > limit + _EPSILON:
            if current is not None:
                runs.append(current)
                current, weight = None, 0.0
            runs.extend(_cut_long(text, span, language, limit))
            continue
        if current is not None and weight + span_weight > limit + _EPSILON:
            runs.append(current)
            current, weight = None, 0.0
        current = span if current is None else (current[0], span[1])
        weight += span_weight
    if current is not None:
        runs.append(current)
    return runs


def chunk_limit(max_words: int, language: str, max_seconds: float = MAX_CHUNK_SECONDS) -> float:
    """A chunk's length limit in `language`'s words: `max_words` (batch_chunk_size; in zh, ja and ko
    the speaking time of that many English words), and never over `max_seconds` of speech."""
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    words_per_second = LANGUAGES[language].words_per_second
    if LANGUAGES[language].chars_per_second is None:
        return min(float(max_words), max_seconds * words_per_second)
    return min(max_words / WORD_EQUIVALENT_PER_SECOND, max_seconds) * words_per_second


def plan_chunks(
    text: str,
    max_words: int,
    language: str = DEFAULT_LANGUAGE,
    first_sentence_alone: bool = False,
    max_seconds: float = MAX_CHUNK_SECONDS,
    one_sentence_per_chunk: bool = False,
) -> list[TextChunk]:
    """Sentences of `text` packed into chunks of at most `chunk_limit(...)`, each with its estimated time.

    With `first_sentence_alone`, the first sentence is a chunk of its own: a streaming client then
    hears audio after one sentence's generation instead of a whole packed chunk's. With
    `one_sentence_per_chunk` every sentence is (a sentence over the limit is still cut). Chunks that
    hold nothing to say (only punctuation or symbols) are dropped; none is ever empty.
    """
    text = normalise_space(text)
    limit = chunk_limit(max_words, language, max_seconds)
    spans = sentence_spans(text, language)
    if one_sentence_per_chunk:
        runs = [run for span in spans for run in _pack(text, [span], language, limit)]
    elif first_sentence_alone and spans:
        runs = _pack(text, spans[:1], language, limit) + _pack(text, spans[1:], language, limit)
    else:
        runs = _pack(text, spans, language, limit)
    chunks = [
        TextChunk(text[a:b].strip(), speech_seconds(text[a:b], language), _sentences_in(text, (a, b), spans, language))
        for a, b in runs
    ]
    return [chunk for chunk in chunks if chunk.text and chunk.seconds > 0]


def _sentences_in(text: str, run: Span, spans: list[Span], language: str) -> tuple[TextChunk, ...]:
    """The sentence spans that overlap `run`, clipped to it; a piece with nothing to say (a lone
    mark) joins the sentence before it, or the one after when it comes first."""
    start, end = run
    pieces = [(max(a, start), min(b, end)) for a, b in spans if a < end and b > start]
    merged: list[Span] = []
    carried: int | None = None  # where a leading silent piece starts
    for a, b in pieces:
        if speech_seconds(text[a:b], language) > 0:
            merged.append((a if carried is None else carried, b))
            carried = None
        elif merged:
            merged[-1] = (merged[-1][0], b)
        elif carried is None:
            carried = a
    return tuple(TextChunk(text[a:b].strip(), speech_seconds(text[a:b], language)) for a, b in merged)


def chunk_text(
    text: str, max_words: int, first_sentence_alone: bool = False, language: str = DEFAULT_LANGUAGE
) -> list[str]:
    """The texts of `plan_chunks`: sentences packed into chunks of at most `max_words` words."""
    return [chunk.text for chunk in plan_chunks(text, max_words, language, first_sentence_alone)]


def pack_chunks(sentences: Iterable[str], max_words: int, language: str = DEFAULT_LANGUAGE) -> list[str]:
    """Whole sentences packed into chunks of at most `max_words` words, in order (no time cap).

    A sentence longer than `max_words` is cut at clause marks, then between words; no word is split
    unless it alone is longer than the budget.
    """
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    joined = ""
    spans: list[Span] = []
    for sentence in sentences:
        sentence = normalise_space(sentence)
        if not sentence:
            continue
        if joined:
            joined += " "
        spans.append((len(joined), len(joined) + len(sentence)))
        joined += sentence
    return [joined[a:b].strip() for a, b in _pack(joined, spans, language, float(max_words))]
