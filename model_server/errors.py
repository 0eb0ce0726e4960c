"""The error table: every way a request can end, and the one mapping from an error to it.

Each error type carries its row (`ErrorDescription`: HTTP status, the `reason` label of
bark_requests_total, OpenAI's error `type` and `code`); an `InvalidInput` also names the field at
fault (OpenAI's `param`). Each wire format converts a description once: the KServe v1 JSON body in
`http/errors.py` (and `model.BarkTTS.__call__`), OpenAI's error object in
`http/openai_speech/api_router.py`. Adding a status is one row here.

Nothing here imports KServe or a web framework: the batching core raises these errors, and only the
HTTP edge knows how they look on the wire.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "ErrorDescription",
    "GenerationFailed",
    "InvalidInput",
    "Overloaded",
    "RequestTimedOut",
    "ServingError",
    "describe_error",
]


@dataclass(frozen=True)
class ErrorDescription:
    """How one failure shows on every wire format and in the metrics."""

    status: int
    #: The `reason` label of bark_requests_total (a fixed set, see outcomes.DEFAULT_REASONS).
    reason: str
    #: OpenAI's error `type` and `code`.
    kind: str
    code: str | None


# -- the table -------------------------------------------------------------------------------------
OK = ErrorDescription(200, "ok", "", None)
INVALID_INPUT = ErrorDescription(400, "invalid_input", "invalid_request_error", None)
UNAUTHORIZED = ErrorDescription(401, "unauthorized", "invalid_request_error", "invalid_api_key")
NOT_FOUND = ErrorDescription(404, "not_found", "invalid_request_error", None)
BODY_TOO_LARGE = ErrorDescription(413, "body_too_large", "invalid_request_error", None)
CANCELLED = ErrorDescription(499, "cancelled", "server_error", None)
GENERATION_ERROR = ErrorDescription(500, "generation_error", "server_error", "generation_error")
UNAVAILABLE = ErrorDescription(503, "unavailable", "server_error", None)
OVERLOADED = ErrorDescription(503, "overloaded", "server_error", "overloaded")
MODEL_NOT_READY = ErrorDescription(503, "model_not_ready", "server_error", "model_not_ready")
TIMEOUT = ErrorDescription(504, "timeout", "server_error", "timeout")

#: The row of a status that no layer described more finely (outcomes.py counts by it).
BY_STATUS = {
    row.status: row
    for row in (OK, INVALID_INPUT, UNAUTHORIZED, NOT_FOUND, BODY_TOO_LARGE, CANCELLED, GENERATION_ERROR, UNAVAILABLE)
} | {TIMEOUT.status: TIMEOUT}


class ServingError(Exception):
    """An error that knows its row of the table."""

    description: ClassVar[ErrorDescription] = GENERATION_ERROR


class InvalidInput(ServingError, ValueError):
    """The request is wrong (HTTP 400); `param` names the field at fault, if one is."""

    description = INVALID_INPUT

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        #: Our messages start with the field ("voice: unknown ..."), so that is the default.
        self.param = param if param is not None else _field_of(message)


class Overloaded(ServingError, RuntimeError):
    """The batch queue is full: the client should retry later (HTTP 503 + Retry-After)."""

    description = OVERLOADED

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimedOut(ServingError, RuntimeError):
    """The request ran past `request_timeout_s`; its queued chunks were cancelled (HTTP 504)."""

    description = TIMEOUT


class GenerationFailed(ServingError, RuntimeError):
    """Generation raised for this request (HTTP 500 with its request id); other requests go on."""

    description = GENERATION_ERROR

    def __init__(self, message: str, request_id: str):
        super().__init__(message)
        self.request_id = request_id


def describe_error(error: BaseException) -> ErrorDescription:
    """The one mapping from an exception to its row; anything unknown is a generation error (500)."""
    if isinstance(error, ServingError):
        return error.description
    if isinstance(error, asyncio.TimeoutError):
        return TIMEOUT
    return GENERATION_ERROR


def _field_of(message: str) -> str | None:
    head, sep, _ = message.partition(":")
    return head if sep and head.replace("_", "").replace(".", "").isalnum() else None
