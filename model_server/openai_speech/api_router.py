"""HTTP wiring of `POST /v1/audio/speech` on KServe's FastAPI app, with OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..audio import FORMATS
from ..errors import InvalidInput, Overloaded, RequestTimedOut
from ..model import BarkTTS
from ..outcomes import DEFAULT_REASONS, note_reason
from .protocol import SpeechRequest, openai_error
from .serving import SpeechService

SPEECH_PATH = "/v1/audio/speech"
logger = logging.getLogger(__name__)


def _param_of(message: str) -> str | None:
    """Our messages start with the field ("voice: unknown ..."): OpenAI's `param`."""
    head, sep, _ = message.partition(":")
    return head if sep and head.replace("_", "").replace(".", "").isalnum() else None


def _error(status: int, message: str, kind: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    # The metric's reason uses the same bounded words as v1 predict (outcomes.DEFAULT_REASONS).
    note_reason(code or DEFAULT_REASONS.get(status, "other"))
    body = openai_error(message, kind, _param_of(message) if status == 400 else None, code)
    return JSONResponse(status_code=status, content=body, headers=headers)


def register_speech_route(app: FastAPI, model: BarkTTS) -> None:
    service = SpeechService(model)
    media = {"audio": None, "sse": "text/event-stream"}

    async def create_speech(request: Request) -> Response:
        """Generate speech from text (OpenAI-compatible; see SpeechRequest for the body)."""
        if not model.ready:
            return _error(503, "model is not ready yet", "server_error", "model_not_ready", {"Retry-After": "5"})
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _error(400, f"body is not valid JSON: {error}", "invalid_request_error")
        try:
            plan = service.plan(body, request.headers.get("x-request-id"))
            fmt = plan.request.response_format
            content_type = FORMATS[fmt].content_type
            if plan.request.streaming is not None:
                stream = service.sse_events(plan) if plan.request.streaming == "sse" else service.audio_pieces(plan)
                return StreamingResponse(stream, media_type=media[plan.request.streaming] or content_type)
            data = await asyncio.wait_for(service.whole(plan), model.settings.request_timeout_s)
        except InvalidInput as error:
            return _error(400, str(error), "invalid_request_error")
        except Overloaded as error:
            return _error(503, str(error), "server_error", "overloaded", {"Retry-After": str(error.retry_after_s)})
        except (asyncio.TimeoutError, RequestTimedOut):
            return _error(504, "request took longer than request_timeout_s", "server_error", "timeout")
        except Exception as error:  # a failed batch or anything else: 500 with the id found in the logs
            request_id = request.headers.get("x-request-id") or "unknown"
            logger.exception("speech request %s failed", request_id)
            message = f"generation failed (request id {request_id}): {type(error).__name__}"
            return _error(500, message, "server_error", "generation_error", {"x-request-id": request_id})
        return Response(content=data, media_type=content_type)

    app.add_api_route(
        SPEECH_PATH,
        create_speech,
        methods=["POST"],
        tags=["openai"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SpeechRequest.model_json_schema()}},
            }
        },
        response_class=Response,
        responses={
            200: {
                "description": "the audio file, or a stream of it (chunked audio or server-sent events)",
                "content": {
                    **{FORMATS[fmt].content_type: {} for fmt in FORMATS},
                    "text/event-stream": {},
                },
            },
            400: {"description": "invalid input (OpenAI error shape)"},
            401: {"description": "missing or invalid API key"},
            503: {"description": "queue full or model not ready; see Retry-After"},
        },
    )
