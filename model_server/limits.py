"""Request limits that are not a field's bound: body bytes (413), words and estimated output seconds (400).

Field bounds (prompt characters, instances, chunk size) live in `schema.py`. Here are the limits
that need something else: the body size must be enforced before the body is parsed (KServe's v1
route reads the whole raw body into memory first), the words per request are counted per language
(text.request_words), and the output estimate needs the planned chunks and their semantic budgets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from typing import Any

from .asgi import ASGIApp, Message, Receive, Send, send_json_error
from .errors import InvalidInput
from .text import request_words

logger = logging.getLogger(__name__)

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
            "(max_output_seconds); send a shorter text"
        )


def check_words_per_request(texts: Iterable[tuple[str, str]], limit: int, where: str) -> None:
    """400 before anything is queued when the (text, language) pairs of one request hold more than
    `limit` words (max_words_per_request): whitespace words where words are spaced, and in Chinese,
    Japanese and Korean the speaking time of an English word (0.4 s), as `batch_chunk_size` counts."""
    words = sum(request_words(text, language) for text, language in texts)
    if words > limit + 1e-9:
        count = f"{words:.0f}" if float(words).is_integer() else f"about {words:.1f}"
        raise InvalidInput(
            f"{where}: {count} words in total is over the limit of {limit} per request (max_words_per_request)"
        )


class BodyTooLarge(Exception):
    """Raised from the wrapped `receive` when a body without (or with a false) Content-Length grows too big."""


class BodySizeLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, from Content-Length or while it streams in.

    A declared Content-Length over the limit is refused without reading the body; a chunked (or
    lying) body is counted as it arrives and refused as soon as it passes the limit, so no more than
    `max_bytes` plus one network read is ever buffered for a request.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"request body of {declared} bytes")
            return
        received = 0
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if response_started:  # nothing sensible left to say; the server closes the connection
                raise
            await self._refuse(send, f"request body of more than {self.max_bytes} bytes")

    async def _refuse(self, send: Send, what: str) -> None:
        message = f"{what} is over the limit of {self.max_bytes} bytes (max_body_bytes)"
        logger.info("refused: %s", message)
        # The unread rest of the body cannot be skipped safely: end the connection after this.
        await send_json_error(send, 413, {"error": message}, [(b"connection", b"close")])


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server itself rejects a malformed Content-Length
    return None
