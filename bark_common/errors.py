"""The error table: every way a request can end, and the one mapping from an error to it.

Each error type carries its row (`ErrorDescription`: HTTP status, the `reason` label of
bark_requests_total, OpenAI's error `type` and `code`); an `InvalidInput` also names the field at
fault (OpenAI's `param`), given where it is raised. Each wire format converts an error once: the
KServe v1 JSON body in `model_server/http/errors.py` (and `model.BarkTTS.__call__`), OpenAI's error
object in `model_server/http/openai_speech/api_router.py`, the job sidecar's body in
`webhook_sidecar/api.py`. Adding a status is one row here (and its type, if something raises it).

The model server and the job sidecar both use this table, so it imports neither KServe, torch nor a
web framework: the batching core raises these errors, and only the HTTP edge knows their wire shape.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "BodyTooLarge",
    "Conflict",
    "ErrorDescription",
    "Forbidden",
    "GenerationFailed",
    "Gone",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "RequestTimedOut",
    "ServingError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
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
FORBIDDEN = ErrorDescription(403, "forbidden", "invalid_request_error", "forbidden")
NOT_FOUND = ErrorDescription(404, "not_found", "invalid_request_error", None)
CONFLICT = ErrorDescription(409, "conflict", "invalid_request_error", "conflict")
GONE = ErrorDescription(410, "gone", "invalid_request_error", "gone")
BODY_TOO_LARGE = ErrorDescription(413, "body_too_large", "invalid_request_error", None)
TOO_MANY_REQUESTS = ErrorDescription(429, "too_many_requests", "requests", "rate_limit_exceeded")
CANCELLED = ErrorDescription(499, "cancelled", "server_error", None)
GENERATION_ERROR = ErrorDescription(500, "generation_error", "server_error", "generation_error")
UNAVAILABLE = ErrorDescription(503, "unavailable", "server_error", None)
OVERLOADED = ErrorDescription(503, "overloaded", "server_error", "overloaded")
MODEL_NOT_READY = ErrorDescription(503, "model_not_ready", "server_error", "model_not_ready")
TIMEOUT = ErrorDescription(504, "timeout", "server_error", "timeout")

#: The row of a status that no layer described more finely (outcomes.py counts by it).
BY_STATUS = {
    row.status: row
    for row in (
        OK,
        INVALID_INPUT,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        CONFLICT,
        GONE,
        BODY_TOO_LARGE,
        TOO_MANY_REQUESTS,
        CANCELLED,
        GENERATION_ERROR,
        UNAVAILABLE,
        TIMEOUT,
    )
}


class ServingError(Exception):
    """An error that knows its row of the table."""

    description: ClassVar[ErrorDescription] = GENERATION_ERROR
    #: Seconds a client should wait before trying again (a `Retry-After` header), where that helps.
    retry_after_s: int | None = None

    def http_headers(self) -> dict[str, str]:
        """The headers this error adds on any wire format (the same for v1, OpenAI and the sidecar)."""
        return {"retry-after": str(self.retry_after_s)} if self.retry_after_s is not None else {}


class InvalidInput(ServingError, ValueError):
    """The request is wrong (HTTP 400); `param` names the field at fault (None: the body as a whole).

    `param` is required, so every raise site decides which field it blames (OpenAI clients show it).
    """

    description = INVALID_INPUT

    def __init__(self, message: str, *, param: str | None):
        super().__init__(message)
        self.param = param


class Unauthorized(ServingError):
    """No API key, or not one of ours (HTTP 401 with `WWW-Authenticate: Bearer`)."""

    description = UNAUTHORIZED

    def http_headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class Forbidden(ServingError):
    """A valid key asking for what it may not do, e.g. publishing a voice without an admin key (HTTP 403)."""

    description = FORBIDDEN


class NotFound(ServingError, LookupError):
    """No such job, download or model (HTTP 404)."""

    description = NOT_FOUND


class Conflict(ServingError):
    """The request contradicts one already accepted, e.g. a reused idempotency key (HTTP 409)."""

    description = CONFLICT


class Gone(ServingError):
    """It existed but is no longer served, e.g. an expired download link (HTTP 410)."""

    description = GONE


class BodyTooLarge(ServingError):
    """The body is over the configured limit (HTTP 413)."""

    description = BODY_TOO_LARGE


class TooManyRequests(ServingError):
    """The caller is over a cap (the job sidecar's unfinished jobs): retry after `retry_after_s` (HTTP 429)."""

    description = TOO_MANY_REQUESTS

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(ServingError, RuntimeError):
    """Not serving right now (starting, draining, its store down): retry shortly (HTTP 503)."""

    description = UNAVAILABLE

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(Unavailable):
    """The batch queue is full: the client should retry later (HTTP 503 + Retry-After)."""

    description = OVERLOADED


class RequestTimedOut(ServingError, RuntimeError):
    """The request ran past `request_timeout_s`; its queued chunks were cancelled (HTTP 504)."""

    description = TIMEOUT

    @classmethod
    def after(cls, timeout_s: float) -> RequestTimedOut:
        """The one wording of a timeout, whichever route or stage hit it."""
        return cls(f"request took longer than {timeout_s:g} s (request_timeout_s); its work was dropped")


class GenerationFailed(ServingError, RuntimeError):
    """Generation raised for this request (HTTP 500 with its request id); other requests go on."""

    description = GENERATION_ERROR

    def __init__(self, message: str, request_id: str):
        super().__init__(message)
        self.request_id = request_id

    def http_headers(self) -> dict[str, str]:
        # The id ties the answer to the log lines with the traceback.
        return {"x-request-id": self.request_id}


def describe_error(error: BaseException) -> ErrorDescription:
    """The one mapping from an exception to its row; anything unknown is a generation error (500)."""
    if isinstance(error, ServingError):
        return error.description
    if isinstance(error, asyncio.TimeoutError):
        return TIMEOUT
    return GENERATION_ERROR
