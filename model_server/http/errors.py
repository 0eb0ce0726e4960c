"""The error table (`bark_common.errors`) on the wire: one conversion per format.

- KServe v1: `{"error": message}` with the row's status (`v1_error_response`); KServe itself answers
  its own `InvalidInput` the same way, and a 500 also carries the request id.
- OpenAI: `{"error": {"message", "type", "param", "code"}}` (`openai_error`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bark_common.errors import (
    ErrorDescription,
    GenerationFailed,
    ServingError,
    describe_error,
)

__all__ = [
    "OpenAIErrorResponse",
    "openai_error",
    "openai_error_response",
    "register_error_handlers",
    "v1_error_response",
]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(BaseModel):
    """Every error of the `/v1/audio/` routes: OpenAI's error object (the API document's schema)."""

    error: OpenAIErrorDetail


def openai_error(description: ErrorDescription, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body for a row of the table: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": description.kind, "param": param, "code": description.code}}


def openai_error_response(
    description: ErrorDescription, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """`openai_error` as the answer, with the row's status."""
    return JSONResponse(
        openai_error(description, message, param), status_code=description.status, headers=headers or None
    )


def v1_error_response(error: Exception) -> JSONResponse:
    """The KServe v1 answer to one of our errors."""
    status = describe_error(error).status
    content: dict[str, Any] = {"error": str(error)}
    headers = error.http_headers() if isinstance(error, ServingError) else {}
    if isinstance(error, GenerationFailed):
        # KServe's catch-all answers 500 too, but without the id that ties the answer to the log.
        content["request_id"] = error.request_id
    return JSONResponse(status_code=status, content=content, headers=headers or None)


async def _v1_error_handler(_: Request, exc: Exception) -> JSONResponse:
    return v1_error_response(exc)


def register_error_handlers(app: FastAPI) -> None:
    """KServe maps its InvalidInput to 400 itself; we add the statuses it does not know."""
    # Every row of the table (Overloaded is Unavailable; a voice's 403 and 409 come from predict too).
    app.add_exception_handler(ServingError, _v1_error_handler)
