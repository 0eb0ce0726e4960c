"""The fine stage and the codec, off the loop thread: rows that finished their coarse tokens end here.

Before issue #21 they ran in the loop thread, so every finished chunk stalled all other rows for
the length of its fine pass and codec (tens of milliseconds on a GPU; on the tiny CPU checkpoint
fine + codec were 45% of the loop's wall time). Now the loop hands finished rows over (their
coarse tokens are host data already, so no device event is needed) and goes on stepping; one
worker thread runs them, on its own CUDA stream, and hands each row's audio (or its own error)
back through `collect`, waking the loop.

Grouping: on CUDA the rows waiting when the worker comes round share one fine pass (launch-bound:
the probes' fine stage took 22 ms for one chunk, 235 ms for 32); on a CPU each row runs alone,
which measured faster there (`benchmarks/fine_stage.py`). A pass that fails (out of memory included)
runs its rows again one by one, so a failure stays with its row; a row out of memory alone fails
its own request.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from model_server import metrics
from model_server.generation.faults import OUT_OF_MEMORY, release_cached_memory

logger = logging.getLogger(__name__)

#: Fine codes for a group of rows, in order (raises for the whole group).
FinePass = Callable[[list[Any]], list[torch.Tensor]]
#: A row's audio from its fine codes (its codec), or raises.
Finish = Callable[[Any, torch.Tensor], Any]


class Finisher:
    """A worker thread for the fine stage and codec; the loop thread submits and collects."""

    def __init__(self, fine_pass: FinePass, finish: Finish, *, device: torch.device, group: bool):
        self._fine_pass = fine_pass
        self._finish = finish
        self.device = device
        self.group = group
        self._cond = threading.Condition()
        self._queue: list[Any] = []  # rows waiting for the worker
        self._done: list[tuple[Any, Any]] = []  # (job, audio or error), for `collect`
        self._running: list[Any] = []  # the rows the worker is on
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wake: Callable[[], None] = lambda: None
        self._stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None

    def set_wake(self, wake: Callable[[], None]) -> None:
        """Called (from the worker thread) whenever finished rows are ready to collect."""
        self._wake = wake

    @property
    def pending(self) -> int:
        """Rows handed over and not yet collected."""
        with self._cond:
            return len(self._queue) + len(self._running) + len(self._done)

    def job_ids(self) -> set[int]:
        """id() of the jobs handed over and not yet collected: they hold no decoding row any more."""
        with self._cond:
            rows = [*self._queue, *self._running]
            return {id(row.job) for row in rows} | {id(job) for job, _ in self._done}

    def submit(self, rows: Sequence[Any]) -> None:
        with self._cond:
            self._queue.extend(rows)
            self._ensure_worker()
            self._cond.notify()

    def collect(self) -> list[tuple[Any, Any]]:
        with self._cond:
            done, self._done = self._done, []
        return done

    def drop(self, jobs: Sequence[Any]) -> None:
        """Forget the rows of cancelled jobs: not run if still queued, their outcome not delivered
        (a row already running finishes; the scheduler ignores its outcome)."""
        wanted = {id(job) for job in jobs}
        with self._cond:
            self._queue = [row for row in self._queue if id(row.job) not in wanted]
            self._done = [(job, outcome) for job, outcome in self._done if id(job) not in wanted]

    def drain(self) -> list[Any]:
        """Every job handed over and not collected (the loop is failing everything)."""
        with self._cond:
            jobs = [row.job for row in self._queue] + [job for job, _ in self._done]
            self._queue, self._done = [], []
        return jobs

    def close(self, timeout_s: float = 30) -> None:
        """Stop the worker after the row it is running (a daemon thread still inside a torch kernel
        when the interpreter finalizes aborts the process, hence also at exit)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        atexit.unregister(self.close)

    # -- the worker ----------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="bark-fine", daemon=True)
            self._thread.start()
            atexit.unregister(self.close)  # once, however often it restarts
            atexit.register(self.close)

    def _next_group(self) -> list[Any] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if self.group:
                group, self._queue = self._queue, []
            else:
                group = [self._queue.pop(0)]
            self._running = group
            return group

    def _work(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            stream = torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()
            with stream, torch.inference_mode():
                outcomes = self._run(group)
            with self._cond:
                self._running = []
                self._done.extend((row.job, outcome) for row, outcome in zip(group, outcomes, strict=True))
            self._wake()

    def _run(self, group: list[Any]) -> list[Any]:
        """Each row's audio or its own error; never raises."""
        codes: list[torch.Tensor] | None = None
        if len(group) > 1:
            try:
                codes = self._timed_pass(group)
            except Exception as error:  # then each row alone, so a failure stays with its row
                logger.warning("a fine pass of %d rows failed (%r); running them one by one", len(group), error)
                if isinstance(error, OUT_OF_MEMORY):
                    release_cached_memory(self.device)
        outcomes: list[Any] = []
        for index, row in enumerate(group):
            try:
                fine = codes[index] if codes is not None else self._timed_pass([row])[0]
                outcomes.append(self._finish(row, fine))
            except Exception as error:
                if isinstance(error, OUT_OF_MEMORY):
                    release_cached_memory(self.device)
                outcomes.append(error)
        return outcomes

    def _timed_pass(self, rows: list[Any]) -> list[torch.Tensor]:
        started = time.perf_counter()
        codes = self._fine_pass(rows)
        metrics.STAGE_LATENCY.labels(stage="fine").observe(time.perf_counter() - started)
        metrics.FINE_PASS_ROWS.observe(len(rows))
        return codes
