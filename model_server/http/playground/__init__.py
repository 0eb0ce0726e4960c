"""The playground: a page at /playground to hear voices, settings, dialogues and streaming in a browser.

Plain static files (`static/`: HTML, CSS, ES modules; no build step, no CDN, so it works offline
inside a cluster), served by the model server itself when `BARK_PLAYGROUND=true`; otherwise nothing
is mounted and /playground is a 404. The page reads every bound it shows (prompt length, sampling
ranges, formats, speed) from `/playground/config.json`, which is built here from the same pydantic
models and `Settings` that validate requests, so the page cannot drift from what the API accepts.

The files are public (they are static; API-key auth guards POST routes, progress and maybe /metrics), the
API calls the page makes carry the key the user enters. Every answer under /playground has strict
security headers: scripts and styles from this origin only (no inline code), nothing framed, no
referrer, no MIME sniffing.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bark_common.schema import VOICE_NAME_PATTERN
from model_server.generation.audio import FORMATS
from model_server.generation.languages import LANGUAGES
from model_server.http.asgi import ASGIApp, Message, Receive, Send
from model_server.http.openai_speech.protocol import SpeechRequest
from model_server.model import BarkTTS
from model_server.paths import PLAYGROUND_PATH, REQUEST_PROGRESS_PATH, SPEECH_PATH, VOICES_PATH
from model_server.schema import SynthesisRequest

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"

#: Only this origin's scripts, styles, images and API; audio from blob: URLs the page makes itself.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    # Revalidate (StaticFiles answers 304 from the ETag): an upgraded server never runs a stale page.
    "Cache-Control": "no-cache",
}

_SAMPLING_FIELDS = ("semantic_temperature", "coarse_temperature", "fine_temperature")


class SecurityHeaders:
    """ASGI wrapper adding SECURITY_HEADERS to every response of the app it wraps."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._headers = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self._headers}
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in names]
                message = {**message, "headers": kept + self._headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """minimum/maximum/default of a JSON-schema property, looking inside `anyOf` for the non-null option."""
    options = [option for option in schema.get("anyOf", [schema]) if option.get("type") != "null"]
    found = {key: options[0][key] for key in ("minimum", "maximum") if options and key in options[0]}
    return {**found, "default": schema.get("default")}


def playground_config(model: BarkTTS, auth_required: bool) -> dict[str, Any]:
    """What the page needs to know: routes, limits and every setting's bounds, from the request models."""
    settings = model.settings
    synthesis = SynthesisRequest.model_json_schema()["properties"]
    speech = SpeechRequest.model_json_schema()["properties"]
    return {
        "model": model.name,
        "sample_rate": model.sample_rate,
        "auth_required": auth_required,
        # Relative to the page (/playground/), so a path prefix in front of the server still works.
        "routes": {
            "voices": f"..{VOICES_PATH}",
            "speech": f"..{SPEECH_PATH}",
            "predict": f"../v1/models/{model.name}:predict",
            # `{request_id}` is filled in by the page: how far a whole (not streamed) synthesis is.
            "progress": f"..{REQUEST_PROGRESS_PATH}",
        },
        "max_prompt_chars": settings.max_prompt_chars,
        "max_turns": settings.max_turns,
        "turn_pause_ms": _bounds(synthesis["turn_pause_ms"]),
        "default_voice": synthesis["voice"]["default"],
        "sampling": {
            "do_sample": {"default": synthesis["do_sample"]["default"]},
            **{name: _bounds(synthesis[name]) for name in _SAMPLING_FIELDS},
            "seed": _bounds(synthesis["seed"]),
            "batch_chunk_size": {
                "minimum": settings.min_chunk_words,
                "maximum": settings.max_chunk_words,
                "default": settings.default_chunk_words,
            },
        },
        "speed": _bounds(speech["speed"]),
        "formats": [
            {"name": name, "content_type": info.content_type, "streams": info.streams} for name, info in FORMATS.items()
        ],
        "default_format": synthesis["format"]["default"],
        # Custom voices: the upload form's choices and the name rule, as the voices API checks them.
        "languages": [{"code": code, "name": language.name} for code, language in LANGUAGES.items()],
        "voice_name_pattern": VOICE_NAME_PATTERN,
        # The page plays streams through Web Audio, which takes raw samples: PCM, 16-bit little-endian, mono.
        "stream_format": "pcm",
    }


def register_playground(app: FastAPI, model: BarkTTS) -> None:
    """Mount the page at /playground when `settings.playground` is on; do nothing otherwise."""
    settings = model.settings
    if not settings.playground:
        return
    auth_required = bool(model.service.callers.keys)  # API keys or admin keys

    async def config(_: Request) -> Response:
        return JSONResponse(playground_config(model, auth_required))

    async def to_page(_: Request) -> Response:
        # Relative, so it stays right behind a proxy that adds a path prefix.
        return RedirectResponse("playground/", status_code=308)

    site = Starlette(
        routes=[
            Route("/config.json", config, methods=["GET"]),
            Mount("/", StaticFiles(directory=STATIC_DIR, html=True)),
        ]
    )
    app.add_route(PLAYGROUND_PATH, to_page, methods=["GET"], include_in_schema=False)
    app.mount(PLAYGROUND_PATH, SecurityHeaders(site), name="playground")
    logger.info("playground on at %s/ (BARK_PLAYGROUND=true)", PLAYGROUND_PATH)
