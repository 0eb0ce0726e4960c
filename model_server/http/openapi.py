"""Describe the v1 predict body in the server's OpenAPI document (`GET /openapi.json`).

KServe's v1 route takes the raw `Request` and decodes it itself, so FastAPI's generated document
says nothing about what the route accepts: no request body, and a 422 it never returns. Clients,
code generators and the schemathesis fuzz tests read that document, so `document_api` replaces the
predict operation's description with our pydantic models (`schema.py`), the operator's bounds from
`Settings`, and the error statuses the route really answers with. It also takes out KServe's
description of the routes this server does not serve (`kserve_routes.NOT_SERVED`: they answer 404).
The OpenAI speech route's body and its JSON answer (with `timestamps`) are described the same way, so
the models they share (`Turn`, `Segment`) sit once under components.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from bark_common.schema import Turn
from model_server.config import Settings
from model_server.http.kserve_routes import NOT_SERVED
from model_server.http.openai_speech.protocol import SpeechRequest
from model_server.paths import PREDICT_PATH, SPEECH_PATH
from model_server.schema import PredictRequest, SynthesisRequest, SynthesisResult

_REF = "#/components/schemas/{model}"


class PredictResponse(BaseModel):
    """The v1 answer: one prediction per instance, in order."""

    predictions: list[SynthesisResult]


class ErrorResponse(BaseModel):
    """Every error status of our routes has this body."""

    error: str = Field(description="what went wrong; a 400 names the field or the limit (e.g. max_body_bytes)")
    request_id: str | None = Field(None, description="on a 500: the id of the request's lines in the server log")


_ERRORS: dict[str, str] = {
    "400": "invalid input: the message names the field or the limit (max_words_per_request, ...)",
    "401": "missing or invalid API key (only when keys are configured)",
    "403": "save_voice: this key keeps max_voices_per_key voices already",
    "404": "no model of this name",
    "409": "save_voice: this key already has a voice of that name",
    "413": "body over max_body_bytes",
    "500": "generation failed for this request; `request_id` finds it in the log",
    "503": "queue full (with Retry-After) or model not ready (starting or shutting down)",
    "504": "request ran past request_timeout_s; its work was dropped",
}


def document_api(app: FastAPI, settings: Settings) -> None:
    """Make `app.openapi()` describe the predict route; lazy, since KServe adds its routes at start."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            drop_not_served(document)
            describe_predict(document, settings)
            describe_speech(document, settings)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def drop_not_served(document: dict[str, Any]) -> None:
    """Remove the operations KServe documents but this server answers with 404 (in place)."""
    paths = document.get("paths", {})
    for method, path in NOT_SERVED:
        operations = paths.get(path, {})
        operations.pop(method.lower(), None)
        if path in paths and not operations:
            del paths[path]


def _add_components(document: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Put `model`'s JSON schema (and the models it uses) under components; return a $ref to it."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schema = model.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _apply_bounds(document: dict[str, Any], settings: Settings) -> None:
    """The bounds operators tune in Settings, so the document matches what this server accepts."""
    schemas = document["components"]["schemas"]
    instance = schemas[SynthesisRequest.__name__]["properties"]
    _bound(instance["prompt"], "string", minLength=1, maxLength=settings.max_prompt_chars)
    _bound(instance["batch_chunk_size"], "integer", minimum=settings.min_chunk_words, maximum=settings.max_chunk_words)
    _bound(instance["turns"], "array", maxItems=settings.max_turns)
    _bound_turn(schemas, settings)
    schemas[PredictRequest.__name__]["properties"]["instances"]["maxItems"] = settings.max_instances


def _bound_turn(schemas: dict[str, Any], settings: Settings) -> None:
    """A turn's text as the server bounds it (both routes' bodies refer to the one `Turn`)."""
    _bound(schemas[Turn.__name__]["properties"]["text"], "string", minLength=1, maxLength=settings.max_prompt_chars)


def _bound(schema: dict[str, Any], kind: str, **bounds: int) -> None:
    """Add `bounds` to the `kind` option of a property (the non-null one of an optional field)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == kind:
            option.update(bounds)


def describe_predict(document: dict[str, Any], settings: Settings) -> None:
    """Rewrite the predict operation in a generated OpenAPI document (in place)."""
    operation = document.get("paths", {}).get(PREDICT_PATH, {}).get("post")
    if operation is None:  # KServe has not registered its v1 routes (yet): nothing to describe
        return
    body = _add_components(document, PredictRequest)
    flat = _add_components(document, SynthesisRequest)
    _apply_bounds(document, settings)
    operation["summary"] = "Synthesize speech (KServe v1)"
    operation["description"] = (
        "Text to speech. `instances` holds one request per item; the original Bark API's flat body "
        '(`{"prompt": ...}`) is accepted too. Total words, estimated output seconds and body bytes '
        "are limited by the server's settings."
    )
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"anyOf": [body, flat]}}},
    }
    for parameter in operation.get("parameters", []):
        if parameter.get("name") == "model_name" and parameter.get("in") == "path":
            parameter["schema"] = {"type": "string", "enum": [settings.model_name], "title": "Model Name"}
    error = _add_components(document, ErrorResponse)
    responses: dict[str, Any] = {
        "200": {
            "description": "one prediction per instance",
            "content": {"application/json": {"schema": _add_components(document, PredictResponse)}},
        }
    }
    for status, description in _ERRORS.items():
        responses[status] = {"description": description, "content": {"application/json": {"schema": copy.copy(error)}}}
    responses["503"]["headers"] = {
        "Retry-After": {"description": "seconds to wait when the queue is full", "schema": {"type": "integer"}}
    }
    operation["responses"] = responses


def describe_speech(document: dict[str, Any], settings: Settings) -> None:
    """Put the OpenAI speech body and its JSON answer (with `timestamps`/`captions`) under components."""
    operation = document.get("paths", {}).get(SPEECH_PATH, {}).get("post")
    if operation is None:  # the speech route is not registered on this app
        return
    body = _add_components(document, SpeechRequest)
    schemas = document["components"]["schemas"]
    _bound(schemas[SpeechRequest.__name__]["properties"]["turns"], "array", maxItems=settings.max_turns)
    _bound_turn(schemas, settings)
    operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    answer = operation.get("responses", {}).get("200", {}).get("content", {})
    if "application/json" in answer:
        answer["application/json"] = {"schema": _add_components(document, SynthesisResult)}
