"""The interface both job stores implement, and the transitions they share (states: jobs.py).

A transition names the states it may come from and, where a sidecar holds the row, that it holds it;
it writes its `op` token with the change, so a retry after a lost reply finds its own change and
succeeds instead of raising `StaleJob` (`_update` does the check). Each backend writes its claims,
leases, audio and housekeeping in its own SQL.
"""

from __future__ import annotations

import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .jobs import DELIVERABLE, NO_CAPS, Caps, Job, NewJob, StaleJob, TransitionHook
from .protocol import JobState, Outcome


def new_op() -> str:
    """A token naming one intended change, kept across the retries of that change."""
    return secrets.token_hex(8)


class Store(ABC):
    """The job store the service, the runner and the deliverer use; SQLite and PostgreSQL implement it.

    Calls block (sqlite3, psycopg): async callers wrap them in `asyncio.to_thread`.
    """

    #: True when other sidecars share the store (leases matter, `recover` runs periodically).
    shared: bool
    #: What every transition also sets: the row is idle (not in flight, and no lease where there are any).
    _IDLE: Mapping[str, Any]
    _clock: Callable[[], float]
    _on_transition: TransitionHook

    @abstractmethod
    def open(self) -> None: ...
    @abstractmethod
    def close(self) -> None: ...
    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs (never a password)."""

    @abstractmethod
    def owner_key(self) -> bytes:
        """The key of the keyed hash that records a job's creator (made once per store, kept in it)."""

    @abstractmethod
    def create(self, new: NewJob, caps: Caps = NO_CAPS) -> tuple[Job, bool]:
        """Store a queued job and commit; with a known idempotency key return that job instead. A new
        job over `caps` raises QueueFull (the caps count unfinished jobs: queued or running)."""

    @abstractmethod
    def get(self, job_id: str, with_result: bool = False) -> Job | None: ...
    @abstractmethod
    def get_by_download_token(self, token: str) -> Job | None: ...
    @abstractmethod
    def read_audio(self, job_id: str) -> Iterator[bytes]:
        """The stored audio, chunk by chunk (one query per chunk: nothing holds the whole file)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs per state, every state present (a gauge should read 0, not vanish)."""

    @abstractmethod
    def claim_run(self, op: str | None = None) -> Job | None:
        """Take the oldest due queued job: it becomes `running` and this sidecar's. Retried with the same
        `op` after a lost reply, it returns the job that claim took (or None)."""

    @abstractmethod
    def claim_delivery(self, op: str | None = None) -> Job | None:
        """Take the most overdue deliverable job, counting the attempt before it is made (`op`: as claim_run)."""

    @abstractmethod
    def renew(self, job_ids: list[str]) -> set[str]:
        """Extend the leases of these jobs, which this sidecar works on; returns those still its own (all
        of them without leases)."""

    @abstractmethod
    def recover(self, count_interrupted: bool = True) -> tuple[int, int]:
        """Hand back interrupted work; returns (runs, deliveries). SQLite: everything in flight (one
        owner, called at start); PostgreSQL: rows whose lease lapsed (called periodically)."""

    @abstractmethod
    def release_all(self) -> tuple[int, int]:
        """Shutdown: hand back everything this sidecar holds, due at once for whoever is left."""

    @abstractmethod
    def purge(self, retention_s: float) -> int:
        """Forget finished jobs past retention, and audio whose download link expired."""

    @abstractmethod
    def _update(
        self,
        job_id: str,
        allowed_from: tuple[JobState, ...],
        changes: Mapping[str, Any],
        held: bool,
        where: str = "",
        op: str | None = None,
        audio: bytes | None = None,
    ) -> bool:
        """Set `changes` (and `op_token = op`) on the job if it is in one of `allowed_from` (and, `held`,
        this sidecar holds it; `where`: one more condition, SQL both dialects read alike), storing `audio`
        in the same transaction. True also when the row already carries `op` (a retry of a change that
        landed); False when nothing matched."""

    @abstractmethod
    def _add_attempts(self, job_id: str, delta: int, error: str | None, op: str) -> int | None:
        """attempts += delta on a running job this sidecar holds, once per `op`; the new count, or None."""

    @abstractmethod
    def _min_due(self, where: str) -> float | None:
        """The earliest `next_attempt_at` among the rows `where` selects (SQL both dialects read alike)."""

    # -- what is the same in both backends -------------------------------------------------------

    def _update_held(
        self,
        job_id: str,
        allowed_from: tuple[JobState, ...],
        where: str = "",
        op: str | None = None,
        audio: bytes | None = None,
        **changes: Any,
    ) -> None:
        """Set `changes` (and store `audio`) on a row this sidecar holds in one of `allowed_from`; what
        `changes` leaves out (state, `in_flight`, lease) stays. StaleJob when it is not there (finished,
        handed back, taken over)."""
        if not self._update(job_id, allowed_from, changes, held=True, where=where, op=op, audio=audio):
            raise StaleJob(f"job {job_id} is not in {allowed_from} under this sidecar's hold")

    def _transition(
        self,
        job_id: str,
        allowed_from: tuple[JobState, ...],
        to: JobState,
        op: str | None,
        count: bool = True,
        where: str = "",
        audio: bytes | None = None,
        **changes: Any,
    ) -> None:
        """Move a job this sidecar holds from one of `allowed_from` to `to`, setting `changes`; the row
        is left idle. StaleJob when it is not there; `count`: report `to`."""
        values = {"updated_at": self._clock(), **self._IDLE, "state": to, **changes}
        self._update_held(job_id, allowed_from, where, op or new_op(), audio, **values)
        if count:
            self._on_transition(to)

    def count_attempt(self, job_id: str, delta: int = 1, error: str | None = None, op: str | None = None) -> int:
        """Count `delta` model calls (0: only note the error) on a run this sidecar holds; the new count.
        StaleJob once the run is no longer ours (a lapsed lease: another sidecar counts its own)."""
        attempts = self._add_attempts(job_id, delta, error, op or new_op())
        if attempts is None:
            raise StaleJob(f"job {job_id} is not running under this sidecar's hold")
        return attempts

    def cancel(self, job_id: str) -> Job | None:
        """The caller's cancel, from any replica: a queued job is `cancelled` now; a running one is marked
        (`cancel_requested_at`) and the sidecar running it stops it. Returns the job as it is afterwards
        (None: no such job); a finished one is left alone.

        Each step is one guarded UPDATE; a job that moved between them (claimed, handed back) is tried again.
        """
        for _ in range(5):
            now = self._clock()
            cancelled = {**self._IDLE, "state": "cancelled", "cancel_requested_at": now, "finished_at": now}
            if self._update(job_id, ("queued",), {**cancelled, "updated_at": now}, held=False):
                self._on_transition("cancelled")
                break
            marked = {"cancel_requested_at": now, "updated_at": now}
            if self._update(job_id, ("running",), marked, held=False, where="cancel_requested_at IS NULL"):
                break
            job = self.get(job_id)
            if job is None or job.state != "queued":  # finished, already cancelled, or already marked
                return job
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the caller asked to stop this job (the running sidecar asks about once a second)."""
        job = self.get(job_id)
        return job is not None and job.cancel_requested_at is not None

    def mark_cancelled(self, job_id: str, only_if_requested: bool = False, op: str | None = None) -> None:
        """A run stopped at its caller's request: `cancelled`, no attempt counted, never delivered."""
        where = "cancel_requested_at IS NOT NULL" if only_if_requested else ""
        self._transition(job_id, ("running",), "cancelled", op, where=where, finished_at=self._clock())

    def next_run_due(self) -> float | None:
        return self._min_due("state = 'queued'")

    def next_delivery_due(self) -> float | None:
        return self._min_due("state IN ('succeeded', 'failed', 'delivering') AND in_flight = FALSE")

    def note_progress(self, job_id: str, done: int, total: int) -> None:
        """The model's progress on a running job (chunks); StaleJob once the run is no longer ours."""
        self._update_held(job_id, ("running",), chunks_done=done, chunks_total=total, updated_at=self._clock())

    def requeue(
        self, job_id: str, error: str | None = None, delay_s: float = 0.0, handback: bool = False, op: str | None = None
    ) -> None:
        """Hand a running job back (a retry later; `handback`: the model could not take it, counted in
        `handbacks`, not in attempts); its next run starts afresh. A job its caller cancelled meanwhile
        ends `cancelled` instead (were it marked between the two updates, the next claim sees the mark
        and cancels it before calling the model)."""
        op = op or new_op()
        try:
            self.mark_cancelled(job_id, only_if_requested=True, op=op)
        except StaleJob:
            changes: dict[str, Any] = {"next_attempt_at": self._clock() + delay_s, "last_error": error}
            if handback:
                changes["handbacks"] = _Increment("handbacks")
            self._transition(job_id, ("running",), "queued", op, **changes)

    def finish(
        self,
        job_id: str,
        outcome: Outcome,
        result: dict[str, Any],
        audio: bytes | None = None,
        error: str | None = None,
        status_code: int | None = None,
        download_token: str | None = None,
        download_ttl_s: float = 0.0,
        chunks: int | None = None,
        counted: bool = False,
        op: str | None = None,
    ) -> None:
        """Store the model's answer (or the failure) and make it due for delivery now (by any replica
        sharing the store, which can also serve its download). `audio`: the encoded file, stored in the
        same transaction; `result`: the rest of the prediction. `counted`: this answer is a model call
        to count, in the same statement, so an attempt is never counted without its result. `chunks`:
        all of them are done (a failure keeps the last progress reported, which says how far it got)."""
        now = self._clock()
        progress: dict[str, Any] = {"chunks_done": chunks, "chunks_total": chunks} if chunks is not None else {}
        if counted:
            progress["attempts"] = _Increment("attempts")
        self._transition(
            job_id,
            ("running",),
            outcome,
            op,
            audio=audio,
            outcome=outcome,
            finished_at=now,
            next_attempt_at=now,
            result=json.dumps(result),
            audio_bytes=len(audio) if audio is not None else None,
            error=error,
            last_error=error,
            last_status_code=status_code,
            download_token=download_token,
            download_expires_at=now + download_ttl_s if download_token else None,
            **progress,
        )

    def mark_delivered(self, job_id: str, status_code: int, op: str | None = None) -> None:
        """Done. The audio is dropped (by purge) unless a download link still needs it."""
        now = self._clock()
        self._transition(
            job_id,
            ("delivering",),
            "delivered",
            op,
            delivered_at=now,
            last_status_code=status_code,
            last_error=None,
        )

    def schedule_retry(
        self, job_id: str, delay_s: float, error: str, status_code: int | None, op: str | None = None
    ) -> None:
        """A failed delivery: due again after `delay_s` (a retry is no state change)."""
        self._transition(
            job_id,
            ("delivering",),
            "delivering",
            op,
            count=False,
            next_attempt_at=self._clock() + delay_s,
            last_error=error,
            last_status_code=status_code,
        )

    def mark_dead(self, job_id: str, error: str, status_code: int | None, op: str | None = None) -> None:
        """Given up: kept (with its result) for inspection until retention purges it."""
        self._transition(job_id, DELIVERABLE, "dead", op, last_error=error, last_status_code=status_code)


class _Increment:
    """A change value meaning `column = column + 1` (backends render it in their SQL)."""

    def __init__(self, column: str) -> None:
        self.column = column


def assignments(changes: Mapping[str, Any], placeholder: Callable[[str], str]) -> tuple[str, dict[str, Any]]:
    """`SET` text and parameters of `changes` for a backend whose named parameter is `placeholder(name)`."""
    parts, params = [], {}
    for name, value in changes.items():
        if isinstance(value, _Increment):
            parts.append(f"{name} = {value.column} + 1")
        else:
            parts.append(f"{name} = {placeholder(name)}")
            params[name] = value
    return ", ".join(parts), params


def split_chunks(audio: bytes, size: int) -> Iterator[tuple[int, memoryview]]:
    """(index, slice) of `audio` in pieces of `size` bytes, without copying it."""
    view = memoryview(audio)
    for index, start in enumerate(range(0, len(audio), size)):
        yield index, view[start : start + size]
