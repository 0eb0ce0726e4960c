"""Request limits that are not a field's bound: words and estimated output seconds (400).

Field bounds (prompt characters, instances) live in `schema.py`; the body size (413) is enforced
before the body is parsed, by `http/body_limit.py`. Here are the limits that need something else:
the words per request are counted per language (text.request_words), and the output estimate needs
the planned chunks and their semantic budgets. The chunk size's bound is here too: the job sidecar
checks it at intake, and this module loads neither torch nor audio libraries.
"""

from __future__ import annotations

from collections.abc import Iterable

from bark_common.errors import InvalidInput
from model_server.config import Settings
from model_server.generation.text import request_words

#: Bark's semantic tokens per second of speech: a chunk's token budget bounds its audio length.
SEMANTIC_TOKENS_PER_SECOND = 49.9


def estimated_output_seconds(budgets: Iterable[int]) -> float:
    """Upper bound of the audio seconds that chunks with these semantic token budgets can produce."""
    return sum(budgets) / SEMANTIC_TOKENS_PER_SECOND


def check_output_seconds(budgets: Iterable[int], limit_s: float) -> None:
    """400 before anything is queued when a request could produce more audio than `max_output_seconds`."""
    estimate = estimated_output_seconds(budgets)
    if estimate > limit_s:
        raise InvalidInput(
            f"request may produce up to {estimate:.1f} s of audio, over the limit of {limit_s:g} s "
            "(max_output_seconds); send a shorter text",
            param=None,
        )


def check_words_per_request(texts: Iterable[tuple[str, str]], limit: int, where: str) -> None:
    """400 before anything is queued when the (text, language) pairs of one request hold more than
    `limit` words (max_words_per_request): whitespace words where words are spaced, and in Chinese,
    Japanese and Korean the speaking time of an English word (0.4 s), as `batch_chunk_size` counts."""
    words = sum(request_words(text, language) for text, language in texts)
    if words > limit + 1e-9:
        count = f"{words:.0f}" if float(words).is_integer() else f"about {words:.1f}"
        raise InvalidInput(
            f"{where}: {count} words in total is over the limit of {limit} per request (max_words_per_request)",
            param=where,
        )


def check_chunk_words(size: int | None, settings: Settings, field: str) -> None:
    """`batch_chunk_size` within the operator's bounds (they depend on settings, so not in the request
    model); the sidecar checks a job's with it at intake."""
    if size is not None and not settings.min_chunk_words <= size <= settings.max_chunk_words:
        raise InvalidInput(
            f"{field}: must be between {settings.min_chunk_words} and {settings.max_chunk_words} words, got {size}",
            param=field,
        )
