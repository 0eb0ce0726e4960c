"""Count every synthesis request by outcome, whichever layer answers it.

A request can end in KServe's body decoding (not JSON: 400), in our middlewares (no key: 401, too
large: 413), in the model (400, 503, 504, 500), or with the client gone (499). Counting inside the
model alone misses the first two, so this outermost ASGI middleware counts the status that was
actually sent. Inner layers may name a finer reason with `note_reason` (it travels in a context
variable holding a mutable record, so it crosses into the tasks that run the handler).

The record of a request's reason lives in `model_server/request_outcome.py` (below the model and
this layer); `note_reason`/`note_failure` are re-exported here for the routes.

A stream sends its `200` before its audio is made. When it fails after that, the stream names the
status its failure stands for with `note_failure` (504 timeout, 500 generation error), and that is
what is counted: an alert on 5xx must see it. A response that started but never finished, with no
failure named, is a client that went away mid-answer: 499.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from bark_common.errors import BY_STATUS
from model_server import metrics
from model_server.http.asgi import ASGIApp, Message, Receive, Send
from model_server.paths import OPENAI_SPEECH_ROUTE, PREDICT_PATH, SPEECH_PATH, V1_PREDICT_ROUTE
from model_server.request_outcome import Outcome, note_failure, note_reason, recording

_PREDICT = re.compile("^" + re.escape(PREDICT_PATH).replace(re.escape("{model_name}"), "[^/]+") + "$")
_ROUTES = {SPEECH_PATH: OPENAI_SPEECH_ROUTE}

#: The reason recorded when no layer named one; bounded, like every label value.
DEFAULT_REASONS = {status: row.reason for status, row in BY_STATUS.items()}


def route_of(path: str) -> str | None:
    if _PREDICT.match(path):
        return V1_PREDICT_ROUTE
    return _ROUTES.get(path)


class CountOutcomes:
    """ASGI middleware: `bark_requests_total{route, code, reason}` once per synthesis request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        route = route_of(str(scope.get("path", ""))) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        status: int | None = None
        completed = False
        raised = False

        async def tracked_send(message: Message) -> None:
            nonlocal status, completed
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            await send(message)

        with recording() as outcome:
            try:
                await self.app(scope, receive, tracked_send)
            except Exception:
                raised = True  # Starlette's outer error middleware answers 500 if nothing was sent
                raise
            finally:
                code, reason = _counted(outcome, status, completed, raised)
                metrics.REQUESTS.labels(route=route, code=str(code), reason=reason).inc()


def _counted(outcome: Outcome, status: int | None, completed: bool, raised: bool) -> tuple[int, str]:
    """The (code, reason) a finished request is counted under."""
    if outcome.failed_code is not None:  # failed after its status went out
        return outcome.failed_code, outcome.reason or DEFAULT_REASONS.get(outcome.failed_code, "other")
    if status is None and raised:
        return 500, DEFAULT_REASONS[500]
    if status is None or not completed:  # no answer, or only part of one: the client went away
        return 499, DEFAULT_REASONS[499]
    return status, outcome.reason or DEFAULT_REASONS.get(status, "other")


__all__ = ["DEFAULT_REASONS", "CountOutcomes", "note_failure", "note_reason", "route_of"]
