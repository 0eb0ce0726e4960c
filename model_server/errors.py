"""Errors as types, mapped to HTTP in one place (`register_error_handlers`, `describe_error`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput

__all__ = [
    "ErrorDescription",
    "GenerationFailed",
    "InvalidInput",
    "Overloaded",
    "RequestTimedOut",
    "describe_error",
    "register_error_handlers",
]


class Overloaded(RuntimeError):
    """The batch queue is full: the client should retry later (HTTP 503 + Retry-After)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimedOut(RuntimeError):
    """The request ran past `request_timeout_s`; its queued chunks were cancelled (HTTP 504)."""


class GenerationFailed(RuntimeError):
    """Generation raised for this request (HTTP 500 with its request id); other requests go on."""

    def __init__(self, message: str, request_id: str):
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class ErrorDescription:
    """How one failure shows on every wire format and in the metrics."""

    status: int
    #: The `reason` label of bark_requests_total (a fixed set, see outcomes.DEFAULT_REASONS).
    reason: str
    #: OpenAI's error `type` and `code`.
    kind: str
    code: str | None


def describe_error(error: BaseException) -> ErrorDescription:
    """The one mapping from an exception to its status; anything unknown is a generation error (500)."""
    if isinstance(error, InvalidInput):
        return ErrorDescription(400, "invalid_input", "invalid_request_error", None)
    if isinstance(error, Overloaded):
        return ErrorDescription(503, "overloaded", "server_error", "overloaded")
    if isinstance(error, RequestTimedOut | asyncio.TimeoutError):
        return ErrorDescription(504, "timeout", "server_error", "timeout")
    return ErrorDescription(500, "generation_error", "server_error", "generation_error")


async def _timeout_handler(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=504, content={"error": str(exc)})


async def _overloaded_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    return JSONResponse(status_code=503, content={"error": str(exc)}, headers={"Retry-After": str(exc.retry_after_s)})


async def _generation_failed_handler(_: Request, exc: Exception) -> JSONResponse:
    # KServe's catch-all answers 500 too, but without the id that ties the answer to the log.
    assert isinstance(exc, GenerationFailed)
    return JSONResponse(
        status_code=500,
        content={"error": str(exc), "request_id": exc.request_id},
        headers={"x-request-id": exc.request_id},
    )


def register_error_handlers(app: FastAPI) -> None:
    """KServe maps InvalidInput to 400 itself; we add the statuses it does not know."""
    app.add_exception_handler(Overloaded, _overloaded_handler)
    app.add_exception_handler(RequestTimedOut, _timeout_handler)
    app.add_exception_handler(GenerationFailed, _generation_failed_handler)
