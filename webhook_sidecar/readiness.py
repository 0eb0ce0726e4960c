"""Whether this sidecar's own model server can take a job now: the gate in front of every claim.

A sidecar whose model is down (not listening, loading, answering 503) must not take jobs that a healthy
replica could run. Before claiming, a run loop asks the model server's readiness route (KServe's
`GET /v1/models/{name}`: 200 when ready, 503 otherwise), cached for `cache_s` so that several run
loops polling at `poll_interval_s` cost one request a second. A predict call that still finds the model
unavailable (no connection, 503, 429) hands its job back and closes the gate for the model's
Retry-After, or an exponential back-off while it keeps failing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from .retry import backoff_s

logger = logging.getLogger("webhook_sidecar.readiness")

_CHECK_TIMEOUT_S = 2.0


def ready_url(model_url: str) -> str:
    """KServe's readiness route of a v1 predict URL: `/v1/models/bark:predict` -> `/v1/models/bark`."""
    url = httpx.URL(model_url)
    return str(url.copy_with(path=url.path.removesuffix(":predict"), query=None))


class ModelGate:
    """Open while the model server says it is ready and no hand-back closed it."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        cache_s: float = 1.0,
        base_s: float = 1.0,
        max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.url = url
        self.headers = headers
        self.cache_s = cache_s
        self.base_s = base_s
        self.max_s = max_s
        self.clock = clock
        self._ready = False
        self._checked_until = 0.0
        self._closed_until = 0.0
        self._failures = 0
        self._lock = asyncio.Lock()

    async def is_open(self) -> bool:
        if self.clock() < self._closed_until:
            return False
        async with self._lock:  # the run loops share one check
            if self.clock() >= self._checked_until:
                self._ready = await self._ask()
                self._checked_until = self.clock() + self.cache_s
            return self._ready

    async def _ask(self) -> bool:
        try:
            response = await self.client.get(self.url, headers=self.headers, timeout=_CHECK_TIMEOUT_S)
        except httpx.HTTPError as error:
            logger.debug("model readiness %s: %r", self.url, error)
            return False
        if response.status_code != 200:
            logger.debug("model readiness %s: HTTP %d", self.url, response.status_code)
        return response.status_code == 200

    def close(self, retry_after_s: float | None = None) -> float:
        """A call found the model unavailable: no claims for Retry-After, or a growing back-off."""
        self._failures += 1
        delay = retry_after_s if retry_after_s is not None else backoff_s(self._failures, self.base_s, self.max_s)
        delay = min(delay, self.max_s)
        self._closed_until = self.clock() + delay
        self._checked_until = 0.0  # ask again once it reopens
        return delay

    def succeeded(self) -> None:
        self._failures = 0
