"""Errors as types, and the one mapping from an error to its status (`describe_error`).

The KServe v1 routes answer them through `http/errors.py`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kserve.errors import InvalidInput

__all__ = [
    "ErrorDescription",
    "GenerationFailed",
    "InvalidInput",
    "Overloaded",
    "RequestTimedOut",
    "describe_error",
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
