"""What runs next: the continuous (iteration-level) scheduler, as in vLLM and TGI, for Bark rows.

The asyncio side is the same as the static scheduler's (`enqueue`/`submit`/`cancel`/`close`, a
bounded queue answering 503, urgent first chunks of streams), so model.py and the OpenAI route use
either. The difference is the worker: instead of running whole batches of one (voice, settings)
key, one thread loops over *steps* of a row engine (bark_rows.BarkRowEngine):

    while running:
        drop rows whose request is gone (client disconnected, timeout)
        admit waiting chunks into free rows (urgent first, then oldest; up to the active limit)
        step every active row by one token; deliver the rows that finished

A chunk joins at the next step, a finished chunk leaves at once, and any mix of voices, settings
and seeds shares a step. An out-of-memory step evicts the active rows, halves the active limit and
re-queues them at the front (each row's seed is kept, so a retried row gives the same audio); a row
out of memory alone fails its request. A row's own failure fails only its request.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bark_common.errors import Unavailable
from model_server import metrics
from model_server.generation.faults import OUT_OF_MEMORY, is_fatal_device_error
from model_server.generation.scheduler import BatchFailed, ChunkScheduler

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)
Result = TypeVar("Result")


@dataclass(eq=False)
class RowJob:
    """One chunk of one request, as the row engine sees it (`seed` is set at its first admission)."""

    key: Any
    payload: Any
    future: asyncio.Future[Any]
    urgent: bool = False
    enqueued_at: float = field(default_factory=time.monotonic)
    seed: int | None = None
    #: A streaming request's later chunks wait for its urgent first chunk: alone it finishes sooner
    #: (on a CPU a step's cost grows with its rows), and the client hears audio sooner.
    after: RowJob | None = None
    #: Which request the chunk belongs to (the caller's, or one per enqueue): rows are shared out by it.
    request: Hashable = 0


class RowEngine(Protocol):
    """How steps run (bark_rows.BarkRowEngine, or a fake in tests)."""

    @property
    def active(self) -> int: ...

    @property
    def pending(self) -> int:
        """Rows past stepping (the fine stage and codec, on their own thread), not yet collected."""
        ...

    @property
    def finishing(self) -> set[int]:
        """id() of the jobs past stepping, not yet collected (they hold no row)."""
        ...

    def set_wake(self, wake: Callable[[], None]) -> None: ...

    def admit(self, jobs: Sequence[Any]) -> list[tuple[Any, BaseException]]: ...

    def step(self) -> list[tuple[Any, Any]]: ...

    def collect(self) -> list[tuple[Any, Any]]: ...

    def drop(self, jobs: Sequence[Any]) -> None: ...

    def evict_all(self) -> list[Any]: ...

    def fail_all(self) -> list[Any]: ...

    def close(self) -> None: ...


class ContinuousScheduler(ChunkScheduler[Key, Result]):
    """Asyncio front over one worker thread that steps rows of all requests together."""

    def __init__(
        self,
        engine: RowEngine,
        *,
        max_batch_size: int,
        max_wait_ms: int = 0,
        max_queue_chunks: int,
        retry_after_s: int = 2,
        release_memory: Any = None,
        stream_rest_waits: bool = True,
        on_fatal: Callable[[BaseException], None] | None = None,
    ):
        super().__init__(max_queue_chunks=max_queue_chunks, retry_after_s=retry_after_s)
        self._engine = engine
        self.max_batch_size = max_batch_size
        #: A stream's later chunks wait for its first one (right where a step's cost grows with its
        #: rows, as on a CPU: alone, the first chunk is sooner); otherwise they run beside it.
        self.stream_rest_waits = stream_rest_waits
        self._release_memory = release_memory or (lambda: None)
        # max_wait_ms is not needed: a chunk joins the running rows at the next step.
        self._limit = max_batch_size  # halved on out-of-memory, restored when the engine is idle
        self._waiting: collections.deque[RowJob] = collections.deque()
        self._running: dict[int, RowJob] = {}
        self._requests = itertools.count(1)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Called once (from the worker thread) after a sticky device error (faults.is_fatal_device_error).
        self._on_fatal = on_fatal or (lambda error: None)
        self.fatal_error: BaseException | None = None
        self._finished_ready = False
        engine.set_wake(self._wake)

    def _wake(self) -> None:
        """The fine stage's thread has finished rows to hand back: the worker collects them."""
        with self._cond:
            self._finished_ready = True
            self._cond.notify()

    @property
    def queued_chunks(self) -> int:
        return len(self._waiting)

    @property
    def active_limit(self) -> int:
        return self._limit

    # -- the asyncio side ----------------------------------------------------------------------
    def _enqueue(
        self, key: Key, payloads: Sequence[object], urgent_first: bool, request: Hashable, continuing: bool = False
    ) -> list[asyncio.Future[Result]]:
        loop = asyncio.get_running_loop()
        with self._cond:
            if self.fatal_error is not None:  # the pod restarts: another replica can take it
                raise Unavailable("the device failed; this server is restarting", retry_after_s=self.retry_after_s)
            if not continuing:
                self._check_room(len(payloads))
            request = ("request", request) if request is not None else next(self._requests)
            jobs = [
                RowJob(key, payload, loop.create_future(), urgent=urgent_first and index == 0, request=request)
                for index, payload in enumerate(payloads)
            ]
            if urgent_first and self.stream_rest_waits:
                for job in jobs[1:]:
                    job.after = jobs[0]
            for job in jobs:
                if job.urgent:  # ahead of every waiting chunk but earlier urgent ones
                    position = next((i for i, waiting in enumerate(self._waiting) if not waiting.urgent), None)
                    self._waiting.insert(len(self._waiting) if position is None else position, job)
                else:
                    self._waiting.append(job)
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            self._ensure_worker()
            self._cond.notify()
        return [job.future for job in jobs]

    def cancel(self, futures: Sequence[asyncio.Future[Result]]) -> None:
        """Drop a request's chunks, waiting or running (client gone, timeout, a sibling failed)."""
        for future in futures:
            future.cancel()
        with self._cond:
            self._purge_waiting()
            self._cond.notify()

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="bark-rows", daemon=True)
            self._thread.start()
            atexit.unregister(self._stop_worker_at_exit)  # once per scheduler, however often it restarts
            atexit.register(self._stop_worker_at_exit)

    def _stop_worker_at_exit(self) -> None:
        """Let a running step finish before the interpreter tears down.

        The worker is a daemon thread (it must not keep a stopping server alive), but a daemon thread
        still inside a torch kernel when the interpreter finalizes aborts the process ("terminate
        called without an active exception", exit by SIGABRT). atexit callbacks run after uvicorn's
        drain and before finalization: stop taking work and wait for the current step.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._engine.close()

    async def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
            pending = list(self._waiting) + list(self._running.values())
            self._waiting.clear()
        for job in pending:
            job.future.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        await asyncio.to_thread(self._engine.close)
        atexit.unregister(self._stop_worker_at_exit)

    # -- the worker thread ---------------------------------------------------------------------
    def _purge_waiting(self) -> None:
        """Under the lock: forget waiting chunks whose request is gone."""
        if any(job.future.done() for job in self._waiting):
            self._waiting = collections.deque(job for job in self._waiting if not job.future.done())
        metrics.QUEUE_DEPTH.set(len(self._waiting))

    def _next_admissions(self) -> tuple[list[RowJob], list[RowJob]] | None:
        """Wait for work; return (cancelled running jobs, jobs to admit), or None to stop."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                self._purge_waiting()
                gone = [job for job in self._running.values() if job.future.done()]
                # A cancelled chunk in the fine stage frees no row: it holds none.
                freed = len(self._without_finishing(gone))
                if self._engine.active - freed == 0 and not self._waiting:
                    self._limit = self.max_batch_size  # idle: forget an earlier out-of-memory
                if gone or self._engine.active or self._finished_ready:
                    self._finished_ready = False
                    break
                if any(job.after is None or job.after.future.done() for job in self._waiting):
                    break
                # Nothing runs and every waiting chunk waits for a first chunk whose result is
                # on its way to the event loop: look again shortly.
                self._cond.wait(timeout=0.01 if self._waiting else None)
            free = max(0, self._limit - (self._engine.active - freed))
            admitted = self._share_out(free) if free and self._waiting else []
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            return gone, admitted

    def _share_out(self, free: int) -> list[RowJob]:
        """Up to `free` waiting chunks for the free rows: urgent ones first (a stream's first chunk),
        then one at a time to the request with the fewest chunks running, the oldest first.

        Strict first-come order would make a one-sentence request that arrives behind a long text
        wait until every chunk of the long one had been admitted; shared out by request, it takes the
        next row that frees up, and concurrent long texts split the rows between them.
        """
        # Rows, not requests' chunks in flight: a chunk in the fine stage holds no row any more.
        holding = self._without_finishing(self._running.values())
        running = collections.Counter(job.request for job in holding if not job.future.done())
        admitted: list[RowJob] = []
        while len(admitted) < free:
            best: int | None = None
            best_rank: tuple[bool, int, int] | None = None
            for position, job in enumerate(self._waiting):
                if job.after is not None and not job.after.future.done():
                    continue  # its request's first chunk still runs
                rank = (not job.urgent, running[job.request], position)
                if best_rank is None or rank < best_rank:
                    best, best_rank = position, rank
            if best is None:
                break
            job = self._waiting[best]
            del self._waiting[best]
            running[job.request] += 1
            admitted.append(job)
        return admitted

    def _work(self) -> None:
        while True:
            work = self._next_admissions()
            if work is None:
                return
            gone, admitted = work
            if gone:
                self._engine.drop(gone)
                for job in gone:
                    self._running.pop(id(job), None)
            now = time.monotonic()
            for job in admitted:
                metrics.ADMISSION_WAIT.observe(now - job.enqueued_at)
                self._running[id(job)] = job
            try:
                if admitted:
                    metrics.ADMISSIONS.inc(len(admitted))
                    metrics.BATCH_SIZE.observe(len(admitted))
                    self._settle_all(self._engine.admit(admitted))  # chunks that failed on their own
                if self._engine.active:
                    started = time.perf_counter()
                    metrics.ACTIVE_ROWS.observe(self._engine.active)
                    outcomes = self._engine.step()
                    metrics.STEP_SECONDS.observe(time.perf_counter() - started)
                else:
                    outcomes = self._engine.collect()
            except OUT_OF_MEMORY as error:
                self._out_of_memory(error)
                continue
            except Exception as error:  # the worker must survive any step, but a poisoned device
                if is_fatal_device_error(error):
                    self._fatal(error)
                    return
                logger.exception("a decoding step of %d rows failed", self._engine.active)
                failure = BatchFailed(f"generation failed: {type(error).__name__}: {error}")
                outcomes = [(job, failure) for job in self._evict_all()]
            metrics.INFLIGHT_CHUNKS.set(self._engine.active)
            self._settle_all(outcomes)

    def _without_finishing(self, jobs: Iterable[RowJob]) -> list[RowJob]:
        """The jobs that hold a row (or were taking one): a chunk in the fine stage holds none."""
        finishing = self._engine.finishing
        return [job for job in jobs if id(job) not in finishing]

    def _evict_all(self) -> list[RowJob]:
        """Every row out of the engine; their jobs, out of `_running`. Jobs of a failed admission are
        among them (the engine never made their rows), chunks in the fine stage are not."""
        self._engine.evict_all()
        jobs = self._without_finishing(self._running.values())
        for job in jobs:
            self._running.pop(id(job), None)
        return jobs

    def _settle_all(self, outcomes: Iterable[tuple[RowJob, Any]]) -> None:
        for job, outcome in outcomes:
            self._running.pop(id(job), None)
            self._settle(job, outcome)

    def _out_of_memory(self, error: BaseException) -> None:
        jobs = [job for job in self._evict_all() if not job.future.done()]  # a cancelled one goes no further
        self._release_memory()
        if len(jobs) <= 1:
            for job in jobs:
                self._settle(job, BatchFailed(f"generation failed: {type(error).__name__}: {error}"))
            return
        self._limit = max(1, len(jobs) // 2)
        logger.warning(
            "out of memory with %d active rows (%s); retrying them with at most %d active",
            len(jobs),
            type(error).__name__,
            self._limit,
        )
        with self._cond:
            self._waiting.extendleft(reversed(jobs))
            metrics.QUEUE_DEPTH.set(len(self._waiting))

    def _fatal(self, error: BaseException) -> None:
        """A sticky device error (an illegal address, a device-side assert): every later kernel fails
        too, so fail every request now, take no more, and let the server restart the process."""
        logger.critical("the device failed with a sticky error; failing all requests and stopping: %r", error)
        failure = BatchFailed(f"the device failed and the server is restarting: {type(error).__name__}: {error}")
        with self._cond:
            self.fatal_error = error
            waiting = list(self._waiting)
            self._waiting.clear()
            metrics.QUEUE_DEPTH.set(0)
        jobs = {id(job): job for job in [*self._engine.fail_all(), *self._running.values(), *waiting]}
        self._running.clear()
        for job in jobs.values():
            self._settle(job, failure)
        self._on_fatal(error)

    def _settle(self, job: RowJob, outcome: Any) -> None:
        """Hand a row's audio (or its own error) to its request, on the event loop's thread."""
        if isinstance(outcome, BaseException) and not isinstance(outcome, BatchFailed):
            logger.error("a chunk failed on its own: %r", outcome)
            outcome = BatchFailed(f"generation failed: {type(outcome).__name__}: {outcome}")

        def settle() -> None:
            if job.future.done():
                return
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

        # The loop the request waits on: its future's own (a scheduler outlives an event loop in tests and
        # benchmarks that run several, and the worker thread is started by the first).
        with contextlib.suppress(RuntimeError):  # the event loop is closed (shutdown): nobody waits any more
            job.future.get_loop().call_soon_threadsafe(settle)
