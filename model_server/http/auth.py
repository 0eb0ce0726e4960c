"""API-key authentication for the routes that spend GPU time.

Keys come from settings (`BARK_API_KEYS`, comma separated) and/or a mounted Secret file
(`BARK_API_KEYS_FILE`, one key per line); with none configured, auth is off. Every POST route
(predict, speech, ...) needs a key, as `Authorization: Bearer <key>` or `x-api-key: <key>`; health,
readiness, voices and (unless `metrics_require_auth`) /metrics stay open for probes and scrapers.
Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from model_server.errors import UNAUTHORIZED
from model_server.http.asgi import ASGIApp, Receive, Send, send_json_error
from model_server.http.errors import openai_error
from model_server.paths import METRICS_PATH, OPENAI_AUDIO_PREFIX

UNAUTHORIZED_MESSAGE = "missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"


def load_api_keys(inline: str | None, file: Path | None) -> tuple[str, ...]:
    """Keys from the comma-separated setting and the key file; blank lines and '#' comments skipped."""
    keys = [key.strip() for key in (inline or "").split(",")]
    if file is not None:
        keys += [line.strip() for line in file.read_text().splitlines() if not line.strip().startswith("#")]
    return tuple(dict.fromkeys(key for key in keys if key))


def presented_key(headers: dict[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def key_is_valid(candidate: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time in the key's content: every configured key is compared, no early exit."""
    if candidate is None:
        return False
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


class ApiKeyAuth:
    """ASGI middleware answering 401 (with a JSON error) to unauthenticated protected requests."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...], protect_metrics: bool = False):
        self.app = app
        self.keys = keys
        self.protect_metrics = protect_metrics

    def _protected(self, scope: MutableMapping[str, Any]) -> bool:
        if scope.get("method") == "POST":
            return True
        return self.protect_metrics and scope.get("path") == METRICS_PATH

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not self._protected(scope):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if key_is_valid(presented_key(headers), self.keys):
            await self.app(scope, receive, send)
            return
        if str(scope.get("path", "")).startswith(OPENAI_AUDIO_PREFIX):  # OpenAI clients parse OpenAI's error shape
            body = openai_error(UNAUTHORIZED_MESSAGE, UNAUTHORIZED.kind, None, UNAUTHORIZED.code)
        else:
            body = {"error": UNAUTHORIZED_MESSAGE}
        await send_json_error(send, UNAUTHORIZED.status, body, [(b"www-authenticate", b"Bearer")])
