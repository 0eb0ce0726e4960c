"""Back-off delays shared by the worker (model 5xx/503) and delivery (webhook failures)."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable


def backoff_s(attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential with "equal jitter": between half and all of min(max, base * 2**(attempt-1)).

    Jitter spreads the retries of many jobs that failed together (a receiver outage) so they do not
    return as one burst; keeping half the delay fixed keeps the back-off meaningful.
    """
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
