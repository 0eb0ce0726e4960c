"""What every job store shares: the job row, its states, and the interface both backends implement.

Two backends (`SIDECAR_DATABASE_URL`):
- `sqlite:///path` (store.py): one process owns one file. A row some task works on is `in_flight`;
  at start everything in flight is handed back, since no one else can be working on it.
- `postgresql://...` (store_postgres.py): any number of sidecars share one database. A claim takes the
  row with `FOR UPDATE SKIP LOCKED` and holds it under a lease that the working sidecar renews; when
  a sidecar dies its leases lapse and `recover` (run by every sidecar, periodically) hands the rows
  back. Every write of a leased row names its owner, so a sidecar that lost its lease changes nothing.

The transitions are the same for both: queued -> running -> succeeded | failed -> delivering ->
delivered | dead; and queued | running -> cancelled when the caller asks (`DELETE /jobs/{id}`): a queued
job at once, a running one by the sidecar running it, which sees `cancel_requested_at` (any replica may
set it) and aborts its model call. A transition names the states it may come from, so a stale caller
changes nothing (and learns it from `StaleJob`). `Store` writes the transitions that are only "this state, these
columns" once; each backend writes its claims, leases and housekeeping in its own SQL.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import JobState, Outcome

STATES: tuple[JobState, ...] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "delivering",
    "delivered",
    "dead",
    "cancelled",
)
#: States whose result waits for (another) webhook attempt.
DELIVERABLE: tuple[JobState, ...] = ("succeeded", "failed", "delivering")
#: States nothing happens to any more: kept until retention purges them.
ENDED = "state IN ('delivered', 'dead', 'cancelled')"
#: Columns of a job row, `result` aside (it holds the audio and is read only where needed).
COLUMNS = (
    "id, idempotency_key, request_hash, model_input, webhook_endpoint, public_base, state, outcome, error, "
    "attempts, delivery_attempts, in_flight, created_at, updated_at, started_at, finished_at, "
    "delivered_at, next_attempt_at, last_error, last_status_code, download_token, download_expires_at, "
    "chunks_done, chunks_total, cancel_requested_at"
)
#: What a claim of a run sets besides its state: a re-run reports its progress afresh.
FRESH_RUN = "chunks_done = NULL, chunks_total = NULL"
INTERRUPTED_RUN = "interrupted: the sidecar stopped during the model call"
#: What a run handed back (restart, shutdown, lapsed lease) becomes: queued again (the cut-short call
#: counted when `{count}` is 1), or `cancelled` when its caller asked for that; one statement, so a cancel
#: request landing meanwhile is seen. Each backend fills in its placeholders for `now`, `count`, `error`.
HAND_BACK_RUN = (
    "state = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END, "
    "finished_at = CASE WHEN cancel_requested_at IS NULL THEN finished_at ELSE {now} END, "
    "attempts = attempts + CASE WHEN cancel_requested_at IS NULL THEN {count} ELSE 0 END, "
    "last_error = CASE WHEN cancel_requested_at IS NULL THEN {error} ELSE last_error END"
)

TransitionHook = Callable[[JobState], None]


class StoreUnavailable(RuntimeError):
    """The store cannot be reached right now (database restarting, network): HTTP 503, loops retry."""


class StaleJob(RuntimeError):
    """A transition found the job in another state (or under another sidecar's lease): nothing changed."""


@dataclass(frozen=True)
class Job:
    """One row. `result` is loaded only where it is needed (delivery, downloads): it holds the audio."""

    id: str
    idempotency_key: str | None
    request_hash: str
    model_input: dict[str, Any]
    webhook_endpoint: str
    public_base: str
    state: JobState
    outcome: Outcome | None
    error: str | None
    attempts: int
    delivery_attempts: int
    in_flight: bool
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    delivered_at: float | None
    next_attempt_at: float
    last_error: str | None
    last_status_code: int | None
    download_token: str | None
    download_expires_at: float | None
    #: The model server's progress on the current run (chunks of the text), None until it reports.
    chunks_done: int | None = None
    chunks_total: int | None = None
    #: When the caller asked to cancel it (`DELETE /jobs/{id}`); a running job stops soon after.
    cancel_requested_at: float | None = None
    result: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """A row of either backend (JSON columns are text in both)."""
        values = {name: row[name] for name in row.keys() if name in _FIELDS}  # noqa: SIM118 (sqlite3.Row)
        values["model_input"] = json.loads(values["model_input"])
        values["in_flight"] = bool(values["in_flight"])
        if "result" in values:
            values["result"] = json.loads(values["result"]) if values["result"] is not None else None
        return cls(**values)


_FIELDS = frozenset(Job.__dataclass_fields__)

#: What an INSERT of a new job writes, in the order of `NewJob.insert_values` (the state is 'queued').
NEW_JOB_COLUMNS = (
    "id, idempotency_key, request_hash, model_input, webhook_endpoint, public_base, state, "
    "created_at, updated_at, next_attempt_at"
)


@dataclass(frozen=True)
class NewJob:
    """A job as the API accepted it, before the store gives it a state and timestamps."""

    id: str
    model_input: dict[str, Any]
    webhook_endpoint: str
    public_base: str
    #: Tells a replayed idempotency key with the same body from one with another body (409).
    request_hash: str
    idempotency_key: str | None = None

    def insert_values(self, now: float) -> tuple[Any, ...]:
        """The values of NEW_JOB_COLUMNS but `state`: queued, created and due `now`."""
        identity = (self.id, self.idempotency_key, self.request_hash, json.dumps(self.model_input))
        return (*identity, self.webhook_endpoint, self.public_base, now, now, now)


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
    def create(self, new: NewJob) -> tuple[Job, bool]:
        """Store a queued job and commit; with a known idempotency key return that job instead."""

    @abstractmethod
    def get(self, job_id: str, with_result: bool = False) -> Job | None: ...
    @abstractmethod
    def get_by_download_token(self, token: str) -> Job | None: ...
    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs per state, every state present (a gauge should read 0, not vanish)."""

    @abstractmethod
    def claim_run(self) -> Job | None:
        """Take the oldest due queued job: it becomes `running` and this sidecar's."""

    @abstractmethod
    def count_attempt(self, job_id: str, delta: int = 1, error: str | None = None) -> int:
        """Count `delta` model calls (0: only note the error); returns the new count."""

    @abstractmethod
    def claim_delivery(self) -> Job | None:
        """Take the most overdue deliverable job, counting the attempt before it is made."""

    @abstractmethod
    def mark_delivered(self, job_id: str, status_code: int) -> None:
        """Done. The audio is dropped unless a download link still needs it."""

    @abstractmethod
    def release(self, job_id: str) -> None:
        """A delivery cut short (shutdown): due again at once, the attempt stays counted."""

    @abstractmethod
    def recover(self, count_interrupted: bool = True) -> tuple[int, int]:
        """Hand back interrupted work; returns (runs, deliveries). SQLite: everything in flight (one
        owner, called at start); PostgreSQL: rows whose lease lapsed (called periodically)."""

    @abstractmethod
    def renew(self) -> int:
        """Extend the leases this sidecar holds (a no-op without leases); returns how many."""

    @abstractmethod
    def release_all(self) -> tuple[int, int]:
        """Shutdown: hand back everything this sidecar holds, due at once for whoever is left."""

    @abstractmethod
    def purge(self, retention_s: float) -> int:
        """Forget finished jobs past retention, and audio whose download link expired."""

    @abstractmethod
    def _update(
        self, job_id: str, allowed_from: tuple[JobState, ...], changes: Mapping[str, Any], held: bool, where: str = ""
    ) -> bool:
        """Set `changes` on the job if it is in one of `allowed_from` (and, `held`, this sidecar holds it;
        `where`: one more condition, SQL both dialects read alike). False when nothing matched."""

    @abstractmethod
    def _min_due(self, where: str) -> float | None:
        """The earliest `next_attempt_at` among the rows `where` selects (SQL both dialects read alike)."""

    # -- what is the same in both backends -------------------------------------------------------

    def _update_held(self, job_id: str, allowed_from: tuple[JobState, ...], where: str = "", **changes: Any) -> None:
        """Set `changes` on a row this sidecar holds in one of `allowed_from`, keeping its state, its
        `in_flight` and its lease. StaleJob when it is not there (finished, handed back, taken over)."""
        if not self._update(job_id, allowed_from, changes, held=True, where=where):
            raise StaleJob(f"job {job_id} is not in {allowed_from} under this sidecar's hold")

    def _transition(
        self,
        job_id: str,
        allowed_from: tuple[JobState, ...],
        to: JobState,
        count: bool = True,
        where: str = "",
        **changes: Any,
    ) -> None:
        """Move a job this sidecar holds from one of `allowed_from` to `to`, setting `changes`; the row
        is left idle. StaleJob when it is not there; `count`: report `to`."""
        self._update_held(
            job_id, allowed_from, where, **{"updated_at": self._clock(), **self._IDLE, "state": to, **changes}
        )
        if count:
            self._on_transition(to)

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

    def mark_cancelled(self, job_id: str, only_if_requested: bool = False) -> None:
        """A run stopped at its caller's request: `cancelled`, no attempt counted, never delivered."""
        where = "cancel_requested_at IS NOT NULL" if only_if_requested else ""
        self._transition(job_id, ("running",), "cancelled", where=where, finished_at=self._clock())

    def next_run_due(self) -> float | None:
        return self._min_due("state = 'queued'")

    def next_delivery_due(self) -> float | None:
        return self._min_due("state IN ('succeeded', 'failed', 'delivering') AND in_flight = FALSE")

    def note_progress(self, job_id: str, done: int, total: int) -> None:
        """The model's progress on a running job (chunks); StaleJob once the run is no longer ours."""
        self._update_held(job_id, ("running",), chunks_done=done, chunks_total=total, updated_at=self._clock())

    def requeue(self, job_id: str, error: str | None = None, delay_s: float = 0.0) -> None:
        """Hand a running job back (shutdown, or a retry later); its next run starts afresh. A job its
        caller cancelled meanwhile ends `cancelled` instead (were it marked between the two updates, the
        next claim sees the mark and cancels it before calling the model)."""
        try:
            self.mark_cancelled(job_id, only_if_requested=True)
        except StaleJob:
            self._transition(job_id, ("running",), "queued", next_attempt_at=self._clock() + delay_s, last_error=error)

    def finish(
        self,
        job_id: str,
        outcome: Outcome,
        result: dict[str, Any],
        error: str | None = None,
        status_code: int | None = None,
        download_token: str | None = None,
        download_ttl_s: float = 0.0,
        chunks: int | None = None,
    ) -> None:
        """Store the model's answer (or the failure) and make it due for delivery now (by any replica
        sharing the store, which can also serve its download). `chunks`: all of them are done (a
        failure keeps the last progress reported, which says how far it got)."""
        now = self._clock()
        progress: dict[str, Any] = {"chunks_done": chunks, "chunks_total": chunks} if chunks is not None else {}
        self._transition(
            job_id,
            ("running",),
            outcome,
            outcome=outcome,
            finished_at=now,
            next_attempt_at=now,
            result=json.dumps(result),
            error=error,
            last_error=error,
            last_status_code=status_code,
            download_token=download_token,
            download_expires_at=now + download_ttl_s if download_token else None,
            **progress,
        )

    def schedule_retry(self, job_id: str, delay_s: float, error: str, status_code: int | None) -> None:
        """A failed delivery: due again after `delay_s` (a retry is no state change)."""
        self._transition(
            job_id,
            ("delivering",),
            "delivering",
            count=False,
            next_attempt_at=self._clock() + delay_s,
            last_error=error,
            last_status_code=status_code,
        )

    def mark_dead(self, job_id: str, error: str, status_code: int | None) -> None:
        """Given up: kept (with its result) for inspection until retention purges it."""
        self._transition(job_id, DELIVERABLE, "dead", last_error=error, last_status_code=status_code)
