"""Cross-request dynamic batching: chunks of all concurrent requests share decoding steps.

Each Bark decoding step is bound by kernel-launch overhead, not arithmetic, so a batch of 32 chunks
costs little more than one. One worker owns the engine; it groups waiting chunks by their batch key
(voice + sampling settings, which one `generate` call must share) into batches of at most
`max_batch_size`, waiting at most `max_wait_ms` for a batch to fill. The queue is bounded in chunks:
past it, `submit` raises `Overloaded` (HTTP 503 + Retry-After) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bark_common.errors import InvalidInput, Overloaded
from model_server import metrics

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)
Result = TypeVar("Result")

#: Runs one batch: (key, the chunks' payloads) -> one result per payload, in order.
BatchRunner = Callable[[Key, list], list]


@dataclass
class _Chunk(Generic[Result]):
    payload: object
    future: asyncio.Future[Result]
    enqueued_at: float = field(default_factory=time.monotonic)
    #: Streaming requests put their first chunk ahead of other waiting chunks of the same key.
    urgent: bool = False


@dataclass
class Batch(Generic[Key, Result]):
    """The chunks that run together in one `generate` call."""

    key: Key
    chunks: list[_Chunk[Result]]

    @property
    def payloads(self) -> list:
        return [chunk.payload for chunk in self.chunks]

    def deliver(self, results: Sequence[Result]) -> None:
        for chunk, result in zip(self.chunks, results, strict=True):
            if not chunk.future.done():
                chunk.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        for chunk in self.chunks:
            if not chunk.future.done():
                chunk.future.set_exception(error)


class BatchFailed(RuntimeError):
    """A batch raised; only the requests with chunks in it see this."""


def check_fits_queue(chunks: int, max_queue_chunks: int) -> None:
    """400 for a request with more chunks than the whole queue holds: waiting would never let it in."""
    if chunks > max_queue_chunks:
        raise InvalidInput(
            f"request needs {chunks} chunks, more than the queue holds "
            f"({max_queue_chunks}); send a shorter text or a larger batch_chunk_size",
            param=None,
        )


async def results_in_order(
    futures: list[asyncio.Future[Result]], cancel: Callable[[Sequence[asyncio.Future[Result]]], None]
) -> list[Result]:
    """Every chunk's result, in order; whatever ends the wait, the chunks not yet run are dropped."""
    try:
        return list(await asyncio.gather(*futures))
    finally:
        cancel(futures)


class ChunkScheduler(ABC, Generic[Key, Result]):
    """What the synthesis service uses; `Scheduler` (static batches) and `ContinuousScheduler` (rows
    stepped together) differ only in how they queue and run chunks, not in the queue's bounds."""

    def __init__(self, *, max_queue_chunks: int, retry_after_s: int):
        self.max_queue_chunks = max_queue_chunks
        self.retry_after_s = retry_after_s
        metrics.QUEUE_CAPACITY.set(max_queue_chunks)

    @property
    @abstractmethod
    def queued_chunks(self) -> int:
        """Chunks waiting to start (the bounded queue's depth)."""

    async def submit(self, key: Key, payloads: Sequence[object], *, urgent_first: bool = False) -> list[Result]:
        """Queue the chunks of one request and wait for all of their results, in order."""
        return await results_in_order(self.enqueue(key, payloads, urgent_first=urgent_first), self.cancel)

    def enqueue(
        self,
        key: Key,
        payloads: Sequence[object],
        *,
        urgent_first: bool = False,
        request: Hashable = None,
        continuing: bool = False,
    ) -> list[asyncio.Future[Result]]:
        """Queue chunks and return one future per chunk (for callers that stream results).

        `urgent_first`: a stream's first chunk goes ahead of waiting chunks, so its audio starts sooner.
        `request`: what the chunks belong to, for sharing rows out fairly (the instances of one v1
        request are one request); None: these chunks alone.
        `continuing`: the next chunk of a request already admitted, taking the place of its chunk that
        just finished (`continuity: "previous"`): never refused for a full queue, which it does not grow.
        """
        if not continuing:
            check_fits_queue(len(payloads), self.max_queue_chunks)
        return self._enqueue(key, payloads, urgent_first, request, continuing)

    def _check_room(self, adding: int) -> None:
        """Overloaded (503 + Retry-After) rather than a queue that grows without bound."""
        if self.queued_chunks + adding > self.max_queue_chunks:
            raise Overloaded(
                f"server busy: {self.queued_chunks} chunks queued (capacity {self.max_queue_chunks}); retry later",
                self.retry_after_s,
            )

    @abstractmethod
    def _enqueue(
        self, key: Key, payloads: Sequence[object], urgent_first: bool, request: Hashable, continuing: bool = False
    ) -> list[asyncio.Future[Result]]:
        """Queue chunks already known to fit the queue's capacity (call `_check_room` under the lock,
        unless `continuing`)."""

    @abstractmethod
    def cancel(self, futures: Sequence[asyncio.Future[Result]]) -> None:
        """Drop a request's chunks that have not finished (client gone, timeout, a sibling failed)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop the worker; chunks still queued are dropped."""


class Scheduler(ChunkScheduler[Key, Result]):
    """Asyncio front (submit/await) over a single worker thread that runs batches."""

    def __init__(
        self,
        run_batch: BatchRunner,
        *,
        max_batch_size: int,
        max_wait_ms: int,
        max_queue_chunks: int,
        retry_after_s: int = 2,
    ):
        super().__init__(max_queue_chunks=max_queue_chunks, retry_after_s=retry_after_s)
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._pending: collections.OrderedDict[Key, collections.deque[_Chunk[Result]]] = collections.OrderedDict()
        self._queued = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        # One thread: the engine is not re-entrant and one GPU runs one batch at a time anyway.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bark-batch")

    @property
    def queued_chunks(self) -> int:
        return self._queued

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="bark-scheduler")

    def _enqueue(
        self, key: Key, payloads: Sequence[object], urgent_first: bool, request: Hashable, continuing: bool = False
    ) -> list[asyncio.Future[Result]]:
        if not continuing:
            self._check_room(len(payloads))  # batches are per key here: `request` does not change the order
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        chunks = [
            _Chunk[Result](payload=payload, future=loop.create_future(), urgent=urgent_first and index == 0)
            for index, payload in enumerate(payloads)
        ]
        queue = self._pending.setdefault(key, collections.deque())
        for chunk in chunks:
            if chunk.urgent:
                queue.appendleft(chunk)
            else:
                queue.append(chunk)
        self._queued += len(chunks)
        metrics.QUEUE_DEPTH.set(self._queued)
        assert self._wakeup is not None
        self._wakeup.set()
        return [chunk.future for chunk in chunks]

    def cancel(self, futures: Sequence[asyncio.Future[Result]]) -> None:
        """Drop a request's chunks that have not run yet (client gone, timeout, a sibling failed)."""
        for future in futures:
            future.cancel()
        self._drop_cancelled()

    def _drop_cancelled(self) -> None:
        for key in list(self._pending):
            queue = self._pending[key]
            kept = collections.deque(chunk for chunk in queue if not chunk.future.done())
            self._queued -= len(queue) - len(kept)
            if kept:
                self._pending[key] = kept
            else:
                del self._pending[key]
        metrics.QUEUE_DEPTH.set(self._queued)

    def _oldest_key(self) -> Key | None:
        """The key whose first waiting chunk has waited longest (urgent chunks count as oldest)."""
        best: Key | None = None
        best_rank: tuple[bool, float] | None = None
        for key, queue in self._pending.items():
            if queue:
                rank = (not queue[0].urgent, queue[0].enqueued_at)
                if best_rank is None or rank < best_rank:
                    best, best_rank = key, rank
        return best

    async def _next_batch(self) -> Batch[Key, Result]:
        assert self._wakeup is not None
        while True:
            self._drop_cancelled()
            key = self._oldest_key()
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            queue = self._pending[key]
            deadline = queue[0].enqueued_at + self.max_wait_s
            wait = deadline - time.monotonic()
            if len(queue) < self.max_batch_size and wait > 0 and not queue[0].urgent:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
                continue
            if queue[0].urgent:
                # A streaming request's first chunk runs with other first chunks only, not behind
                # the rest of its request: the client hears audio after one chunk's generation.
                count = 0
                while count < min(self.max_batch_size, len(queue)) and queue[count].urgent:
                    count += 1
            else:
                count = min(self.max_batch_size, len(queue))
            chunks = [queue.popleft() for _ in range(count)]
            if not queue:
                del self._pending[key]
            self._queued -= len(chunks)
            metrics.QUEUE_DEPTH.set(self._queued)
            return Batch(key=key, chunks=chunks)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            batch.chunks = [chunk for chunk in batch.chunks if not chunk.future.done()]
            if not batch.chunks:
                continue
            metrics.BATCH_SIZE.observe(len(batch.chunks))
            metrics.INFLIGHT_CHUNKS.set(len(batch.chunks))
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, batch.key, batch.payloads)
            except Exception as error:  # the worker must survive any batch
                logger.exception("batch of %d chunks failed", len(batch.chunks))
                failure = BatchFailed(f"generation failed: {type(error).__name__}: {error}")
                batch.fail(failure)
            else:
                batch.deliver(results)
            finally:
                metrics.INFLIGHT_CHUNKS.set(0)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)
