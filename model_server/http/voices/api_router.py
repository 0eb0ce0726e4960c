"""HTTP wiring of the voices API on KServe's FastAPI app, with OpenAI-shaped errors (`/v1/audio/...`).

    GET    /v1/audio/voices             presets, aliases, and the custom voices this key may use
    POST   /v1/audio/voices             upload: multipart (fields + `file`) or JSON (`npz_base64`); 201
    GET    /v1/audio/voices/{name}      a custom voice's .npz
    PATCH  /v1/audio/voices/{name}      {"published": bool}: admin keys only
    DELETE /v1/audio/voices/{name}      204

Writes and reads of one voice need a key when keys are configured (http/auth.py); the list stays
open (without a key it shows presets and published voices). `?owner=` lets an admin key act on
another key's voice (the listing shows admins each voice's owner hash).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from bark_common.errors import InvalidInput, ServingError, describe_error
from model_server.http.errors import OpenAIErrorResponse, openai_error_response
from model_server.http.voices.protocol import (
    PublishRequest,
    VoiceEntry,
    VoiceFields,
    VoiceListing,
    VoiceUpload,
)
from model_server.http.voices.serving import FILE_FIELD, JSON_FILE_FIELD, VoicesService, parse_form_fields
from model_server.http.voices.serving import parse_json_upload as parse_json
from model_server.paths import MODEL_VOICES_PATH, VOICES_PATH
from model_server.synthesis import SynthesisService

logger = logging.getLogger(__name__)

VOICE_PATH = VOICES_PATH + "/{name}"
NPZ_TYPE = "application/octet-stream"


def _failure(error: Exception) -> JSONResponse:
    """OpenAI's error object with the error's row of the table; anything unexpected is a logged 500."""
    description = describe_error(error)
    if isinstance(error, ServingError) and description.status != 500:
        param = error.param if isinstance(error, InvalidInput) else None
        return openai_error_response(description, str(error), param, error.http_headers())
    logger.exception("voices request failed", exc_info=error)
    return openai_error_response(description, f"voices request failed: {type(error).__name__}")


async def _answer(work: Callable[[], Any], status: int = 200) -> Response:
    """Run `work` (store calls block) in a worker thread; its result as JSON, bytes, or nothing."""
    try:
        result = await asyncio.to_thread(work)
    except Exception as error:
        return _failure(error)
    if isinstance(result, bytes):
        return Response(result, media_type=NPZ_TYPE)
    if result is None:
        return Response(status_code=204)
    return JSONResponse(VoiceEntry.model_validate(result).model_dump(exclude_none=True), status_code=status)


async def _upload_parts(request: Request) -> tuple[Any, bytes, str]:
    """(fields, .npz bytes, the field that held it) of a multipart or JSON upload."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=8)
        except (HTTPException, MultiPartException) as error:
            detail = getattr(error, "detail", None) or getattr(error, "message", str(error))
            raise InvalidInput(f"body: not a readable multipart form ({detail})", param=None) from None
        upload = form.get(FILE_FIELD)
        if not isinstance(upload, UploadFile):
            raise InvalidInput(f"{FILE_FIELD}: missing; send the speaker prompt (.npz) as the file", param=FILE_FIELD)
        texts = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        return parse_form_fields(texts), await upload.read(), FILE_FIELD
    if content_type in ("application/json", ""):
        fields, npz = parse_json(await request.body())
        return fields, npz, JSON_FILE_FIELD
    raise InvalidInput(
        f"content-type: {content_type!r}; send multipart/form-data (fields and a file) or application/json",
        param="content-type",
    )


def register_voice_routes(app: FastAPI, synthesis: SynthesisService, model_name: str) -> None:
    service = VoicesService(synthesis)

    async def list_voices(request: Request) -> Response:
        """Voice presets with their language, the OpenAI-name aliases, and your custom voices."""
        try:
            caller = service.caller(request.headers, required=False)
        except Exception as error:
            return _failure(error)
        listing = VoiceListing.model_validate(synthesis.describe_voices(caller))
        return JSONResponse(listing.model_dump(exclude_none=True))

    async def upload_voice(request: Request) -> Response:
        """Add a custom voice: a Bark speaker prompt (.npz) and a statement that the speaker consented."""
        try:
            caller = service.caller(request.headers)
            fields, npz, field = await _upload_parts(request)
        except Exception as error:
            return _failure(error)
        return await _answer(lambda: service.upload(caller, fields, npz, field), status=201)

    async def get_voice(name: str, request: Request, owner: str | None = None) -> Response:
        """A custom voice's speaker prompt (.npz), yours or a published one."""
        return await _answer(lambda: service.download(service.caller(request.headers), name, owner))

    async def publish_voice(name: str, request: Request, owner: str | None = None) -> Response:
        """Publish a custom voice to every API key, or take it back (admin keys only)."""
        body = await request.body()
        return await _answer(lambda: service.publish(service.caller(request.headers), name, body, owner))

    async def delete_voice(name: str, request: Request, owner: str | None = None) -> Response:
        """Delete one of your custom voices (requests that already use it finish)."""
        return await _answer(lambda: service.delete(service.caller(request.headers), name, owner))

    errors = {
        status: {"model": OpenAIErrorResponse, "description": description}
        for status, description in {
            400: "invalid input; the message names the field (OpenAI's error object)",
            401: "missing or invalid API key (only when keys are configured)",
            403: "not allowed: publishing without an admin key, or over max_voices_per_key",
            404: "no such custom voice for this key",
            409: "this key already has a voice of that name",
            413: "body over max_body_bytes",
            503: "the voice store is unreachable (Retry-After)",
        }.items()
    }
    # KServe-style: the same listing under the model's own path too.
    for path in (VOICES_PATH, MODEL_VOICES_PATH.format(model_name=model_name)):
        app.add_api_route(
            path,
            list_voices,
            methods=["GET"],
            tags=["voices"],
            response_model=VoiceListing,
            responses={401: errors[401]},
        )
    fields = VoiceFields.model_json_schema()
    form = {
        "type": "object",
        "required": [*fields["required"], FILE_FIELD],
        "properties": {
            **fields["properties"],
            FILE_FIELD: {"type": "string", "format": "binary", "description": "the speaker prompt (.npz)"},
        },
    }
    app.add_api_route(
        VOICES_PATH,
        upload_voice,
        methods=["POST"],
        tags=["voices"],
        status_code=201,
        response_model=VoiceEntry,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": VoiceUpload.model_json_schema()},
                    "multipart/form-data": {"schema": form},
                },
            }
        },
        responses={status: errors[status] for status in (400, 401, 403, 409, 413, 503)},
    )
    app.add_api_route(
        VOICE_PATH,
        get_voice,
        methods=["GET"],
        tags=["voices"],
        response_class=Response,
        responses={
            200: {"description": "the speaker prompt (.npz)", "content": {NPZ_TYPE: {}}},
            **{status: errors[status] for status in (401, 403, 404, 503)},
        },
    )
    app.add_api_route(
        VOICE_PATH,
        publish_voice,
        methods=["PATCH"],
        tags=["voices"],
        response_model=VoiceEntry,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PublishRequest.model_json_schema()}},
            }
        },
        responses={status: errors[status] for status in (400, 401, 403, 404, 503)},
    )
    app.add_api_route(
        VOICE_PATH,
        delete_voice,
        methods=["DELETE"],
        tags=["voices"],
        status_code=204,
        response_class=Response,
        responses={status: errors[status] for status in (401, 403, 404, 503)},
    )
