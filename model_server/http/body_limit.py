"""Body bytes (413): enforced before the body is parsed, since KServe's v1 route reads the whole raw
body into memory first."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from bark_common.errors import BODY_TOO_LARGE
from model_server.http.asgi import ASGIApp, Message, Receive, Send, send_json_error

logger = logging.getLogger(__name__)


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
        await send_json_error(send, BODY_TOO_LARGE.status, {"error": message}, {"connection": "close"})


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server itself rejects a malformed Content-Length
    return None
