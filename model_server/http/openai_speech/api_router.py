"""HTTP wiring of `POST /v1/audio/speech` on KServe's FastAPI app, with OpenAI-shaped errors.

Every answer carries the request's id (`x-request-id`: the client's, or one made here), and a 500
names it in its message, so an error report finds the request's log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from bark_common.errors import (
    INVALID_INPUT,
    MODEL_NOT_READY,
    ErrorDescription,
    InvalidInput,
    RequestTimedOut,
    ServingError,
    describe_error,
)
from model_server.generation.audio import FORMATS
from model_server.http.errors import OpenAIErrorResponse, openai_error_response
from model_server.http.openai_speech.serving import SpeechPlan, SpeechService, SpeechStream, StreamAborted
from model_server.http.outcomes import note_reason
from model_server.paths import SPEECH_PATH
from model_server.synthesis import SynthesisService

logger = logging.getLogger(__name__)

#: Names the custom voice a `save_voice` request kept (the audio answer has no other place for it).
SAVED_VOICE_HEADER = "x-saved-voice"


def _error(
    description: ErrorDescription,
    message: str,
    request_id: str,
    param: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    # The metric's reason is the row's, the same bounded words as v1 predict.
    note_reason(description.reason)
    return openai_error_response(description, message, param, {**(headers or {}), "x-request-id": request_id})


def _error_for(error: BaseException, request_id: str, timeout_s: float) -> JSONResponse:
    """The answer to a request that failed before its first byte (errors.describe_error has the status)."""
    description = describe_error(error)
    headers = error.http_headers() if isinstance(error, ServingError) else {}
    param = error.param if isinstance(error, InvalidInput) else None
    if description.status < 500 or description.status == 503:  # 400, and a voice's 401/403/409
        message = str(error)
    elif description.status == 504:  # ours, or asyncio's from the whole request's wait_for
        message = str(error if isinstance(error, RequestTimedOut) else RequestTimedOut.after(timeout_s))
    else:  # a failed batch or anything else: the id finds the traceback in the log
        logger.error("speech request %s failed", request_id, exc_info=error)
        message = f"generation failed (request id {request_id}): {type(error).__name__}"
    return _error(description, message, request_id, param, headers)


class SpeechStreamResponse(StreamingResponse):
    """A stream whose failure after the first byte ends the connection without the closing chunk.

    Chunked transfer ends with an empty chunk; a response that stops before it is, to every HTTP
    client, an incomplete transfer, which is the only way left to say "failed" once `200` went out.
    The stream's queued chunks and encoder are released however the response ends (even if it never
    started: the client left between the handler's return and the first send).
    """

    def __init__(self, stream: SpeechStream, sse: bool, media_type: str, headers: dict[str, str]):
        super().__init__(stream.sse() if sse else stream.audio(), media_type=media_type, headers=headers)
        self._stream = stream

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except StreamAborted:
            return  # uvicorn closes a connection whose response did not complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()


def _headers(plan: SpeechPlan, request_id: str) -> dict[str, str]:
    """The request's id, and with `save_voice` the name the voice was kept under (it was, by now: a
    stream's first chunk, whose tokens are kept, is made before the response starts)."""
    headers = {"x-request-id": request_id}
    if plan.request.save_voice is not None:
        headers[SAVED_VOICE_HEADER] = plan.request.save_voice.name
    return headers


def register_speech_route(app: FastAPI, synthesis: SynthesisService, is_ready: Callable[[], bool]) -> None:
    """POST /v1/audio/speech over `synthesis`; `is_ready` is the model's readiness (503 while false)."""
    service = SpeechService(synthesis)

    async def create_speech(request: Request) -> Response:
        """Generate speech from text (OpenAI-compatible; see SpeechRequest for the body)."""
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        timeout_s = synthesis.settings.request_timeout_s
        if not is_ready():
            return _error(MODEL_NOT_READY, "model is not ready yet", request_id, headers={"Retry-After": "5"})
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _error(INVALID_INPUT, f"body is not valid JSON: {error}", request_id)
        try:
            caller = synthesis.callers.of(request.headers)
            # In a worker thread: splitting a long text would hold up every other request's I/O.
            plan = await asyncio.to_thread(service.plan, body, request_id, caller)
            content_type = plan.content_type
            if plan.request.streaming is not None:
                # Queued and the first piece made before the response starts: refusals keep their status.
                stream = await service.open_stream(plan)
                sse = plan.request.streaming == "sse"
                media_type = "text/event-stream" if sse else content_type
                return SpeechStreamResponse(stream, sse, media_type, _headers(plan, request_id))
            data = await asyncio.wait_for(service.whole(plan), timeout_s)
        except Exception as error:
            return _error_for(error, request_id, timeout_s)
        return Response(content=data, media_type=content_type, headers=_headers(plan, request_id))

    def error(description: str) -> dict[str, Any]:
        return {"model": OpenAIErrorResponse, "description": description}

    app.add_api_route(
        SPEECH_PATH,
        create_speech,
        methods=["POST"],
        tags=["openai"],
        # The body's and the JSON answer's schemas (SpeechRequest, SynthesisResult) go in with the models
        # they use, under components: http/openapi.py fills them in (`describe_speech`).
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {}}}},
        response_class=Response,
        responses={
            200: {
                "description": (
                    "the audio file, or a stream of it (chunked audio or server-sent events); a stream that "
                    "fails after its first byte ends with an `error` event (SSE) or an incomplete transfer (audio). "
                    "With `timestamps` or `captions` (not streamed): JSON, the v1 prediction's shape"
                ),
                "content": {
                    **{FORMATS[fmt].content_type: {} for fmt in FORMATS},
                    "text/event-stream": {},
                    "application/json": {},
                },
            },
            400: error("invalid input (OpenAI error shape)"),
            401: error("missing or invalid API key"),
            403: error("save_voice: this key keeps max_voices_per_key voices"),
            409: error("save_voice: this key already has a voice of that name"),
            413: {"description": "body over max_body_bytes"},
            500: error("generation failed; the message names the request id"),
            503: error("queue full or model not ready; see Retry-After"),
            504: error("request (or stream) ran past request_timeout_s"),
        },
    )
