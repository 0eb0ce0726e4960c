"""How the current request ends, as the layers that know it name it (a context variable).

The HTTP edge counts every synthesis request by its outcome (`http/outcomes.CountOutcomes`); the
finer reason (`overloaded` for a 503, a stream's failure after its 200) is known deeper, in the
KServe model (model.py) and the OpenAI route. This module sits below both, so the model names a
reason without importing the HTTP layer. The record is mutable and travels in a context variable,
so it crosses into the tasks that run the handler.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class Outcome:
    reason: str | None = None
    #: Set when the request failed after its status went out (a stream): the status counted instead.
    failed_code: int | None = None


_current: ContextVar[Outcome | None] = ContextVar("bark_request_outcome", default=None)


@contextmanager
def recording() -> Iterator[Outcome]:
    """The record the layers below fill in for the request handled inside the block."""
    outcome = Outcome()
    token = _current.set(outcome)
    try:
        yield outcome
    finally:
        _current.reset(token)


def note_reason(reason: str) -> None:
    """Name why the current request ends as it does (e.g. `overloaded` for a 503)."""
    outcome = _current.get()
    if outcome is not None:
        outcome.reason = reason


def note_failure(code: int, reason: str) -> None:
    """The request failed after its (2xx) status was sent: count it as `code` with `reason`."""
    outcome = _current.get()
    if outcome is not None:
        outcome.failed_code = code
        outcome.reason = reason
