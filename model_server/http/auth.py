"""API-key authentication for the routes that spend GPU time.

Keys come from settings (`BARK_API_KEYS`, comma separated) and/or a mounted Secret file
(`BARK_API_KEYS_FILE`, one key per line), admin keys too (`BARK_ADMIN_API_KEYS`); with none
configured, auth is off. Every write (POST: predict, speech, a voice upload; DELETE and PATCH of a
voice), the request progress route and a voice's `.npz` need a key, as `Authorization: Bearer <key>`
or `x-api-key: <key>`; health, readiness, the voice list and (unless `metrics_require_auth`) /metrics
stay open for probes and scrapers.
Keys are compared in constant time and never logged.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from bark_common.api_keys import UNAUTHORIZED_MESSAGE, key_is_valid, presented_key
from bark_common.errors import Unauthorized
from model_server.http.asgi import ASGIApp, Receive, Send, send_json_error
from model_server.http.errors import openai_error
from model_server.paths import METRICS_PATH, OPENAI_AUDIO_PREFIX, REQUESTS_PREFIX, VOICES_PATH

#: One custom voice's routes (its .npz, publish, delete): the voice list itself stays open.
VOICE_PREFIX = VOICES_PATH + "/"

__all__ = ["ApiKeyAuth"]


class ApiKeyAuth:
    """ASGI middleware answering 401 (with a JSON error) to unauthenticated protected requests."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...], protect_metrics: bool = False):
        self.app = app
        self.keys = keys
        self.protect_metrics = protect_metrics

    def _protected(self, scope: MutableMapping[str, Any]) -> bool:
        path = str(scope.get("path", ""))
        # Every write (POST, and DELETE/PATCH of a voice), request progress, and one voice's tokens.
        if scope.get("method") not in ("GET", "HEAD", "OPTIONS") or path.startswith((REQUESTS_PREFIX, VOICE_PREFIX)):
            return True
        return self.protect_metrics and path == METRICS_PATH

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not self._protected(scope):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if key_is_valid(presented_key(headers), self.keys):
            await self.app(scope, receive, send)
            return
        error = Unauthorized(UNAUTHORIZED_MESSAGE)
        if str(scope.get("path", "")).startswith(OPENAI_AUDIO_PREFIX):  # OpenAI clients parse OpenAI's error shape
            body = openai_error(error.description, str(error))
        else:
            body = {"error": str(error)}
        await send_json_error(send, error.description.status, body, error.http_headers())
