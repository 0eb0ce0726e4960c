"""How far each request is: its chunks done out of its chunks queued, by request id.

A long text takes minutes. The job sidecar (and any client that sent an `x-request-id`) asks
`GET /v1/requests/{id}/progress` while its call is still running, so a job's status can say
"3 of 10 chunks" instead of only "running". Counting happens where chunks are queued
(`SynthesisService.enqueue`): each chunk's future reports when it settles, on the event loop, so no
lock is needed. The board is per replica; a finished request stays readable for `retention_s`
(a poll that races the answer still sees it finish), and the board never holds more than
`max_requests` entries of ids up to `MAX_ID_CHARS`, so ids chosen by clients cannot grow it
without bound (a longer id is simply not tracked).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

__all__ = ["MAX_ID_CHARS", "ProgressBoard", "RequestProgress"]

#: Request ids longer than this are not tracked (UUIDs and job ids are 32 to 36 characters).
MAX_ID_CHARS = 128


@dataclass
class RequestProgress:
    """One request's chunks: queued, generated, and settled (generated, failed or cancelled)."""

    request_id: str
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_settled: int = 0
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def describe(self) -> dict[str, Any]:
        """The wire form of `GET /v1/requests/{id}/progress`."""
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return {
            "request_id": self.request_id,
            "chunks_done": self.chunks_done,
            "chunks_total": self.chunks_total,
            "finished": self.finished,
            "elapsed_s": round(end - self.started_at, 3),
        }


class ProgressBoard:
    """Progress of the requests this replica is working on (or finished a moment ago)."""

    def __init__(
        self, retention_s: float = 60.0, max_requests: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
        self.retention_s = retention_s
        self.max_requests = max_requests
        self._clock = clock
        self._requests: collections.OrderedDict[str, RequestProgress] = collections.OrderedDict()
        #: Finished requests in the order they finished: the oldest expire first.
        self._finished: collections.deque[RequestProgress] = collections.deque()

    def track(self, request_id: str, futures: Sequence[asyncio.Future[Any]]) -> RequestProgress | None:
        """Count `futures` (one per chunk) towards `request_id` (None: the id is too long to keep).

        A request with several instances calls this once per instance; an id whose earlier request
        already finished (a job run again under the same id) starts from zero.
        """
        if len(request_id) > MAX_ID_CHARS:
            return None
        self._forget_old()
        progress = self._requests.get(request_id)
        if progress is None or progress.finished:
            progress = RequestProgress(request_id, started_at=self._clock())
            self._requests.pop(request_id, None)
            self._requests[request_id] = progress
            while len(self._requests) > self.max_requests:
                self._requests.popitem(last=False)
        progress.chunks_total += len(futures)
        for future in futures:
            future.add_done_callback(lambda settled: self._settled(progress, settled))
        return progress

    def get(self, request_id: str) -> RequestProgress | None:
        self._forget_old()
        return self._requests.get(request_id)

    def __len__(self) -> int:
        return len(self._requests)

    def _settled(self, progress: RequestProgress, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            progress.chunks_done += 1
        progress.chunks_settled += 1
        if progress.chunks_settled == progress.chunks_total:
            progress.finished_at = self._clock()
            self._finished.append(progress)

    def _forget_old(self) -> None:
        """Drop requests finished more than `retention_s` ago (unless their id was reused since)."""
        horizon = self._clock() - self.retention_s
        while self._finished and cast(float, self._finished[0].finished_at) < horizon:
            progress = self._finished.popleft()
            if self._requests.get(progress.request_id) is progress:
                del self._requests[progress.request_id]
