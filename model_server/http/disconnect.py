"""Cancel a request's work when its client goes away.

uvicorn keeps running a handler after the client disconnects; for Bark that would mean minutes of
GPU time spent on audio nobody will read. This ASGI middleware watches the connection once the
request body has been read and cancels the handler on `http.disconnect`; the cancellation reaches
`Scheduler.submit`, which drops the request's chunks that have not run yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableMapping
from typing import Any

from model_server.http.asgi import ASGIApp, Message, Receive, Send

logger = logging.getLogger(__name__)


class CancelOnDisconnect:
    """ASGI middleware: POST handlers are cancelled when the client disconnects mid-request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        response_sent = False
        client_gone = False

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read.set()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_sent
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                response_sent = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, tracked_receive, tracked_send))

        async def watch() -> None:
            await body_read.wait()
            message = await receive()
            if message["type"] == "http.disconnect" and not response_sent and not handler.done():
                nonlocal client_gone
                client_gone = True
                logger.info("client disconnected from %s: cancelling its work", scope.get("path"))
                handler.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not client_gone:
                raise
            # The client is gone: there is nobody to send a response to.
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
