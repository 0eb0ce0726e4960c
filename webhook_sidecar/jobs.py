"""What every job store shares: the job row, its states, and the interface both backends implement.

Two backends (`SIDECAR_DATABASE_URL`):
- `sqlite:///path` (store.py): one process owns one file. A row some task works on is `in_flight`;
  at start everything in flight is handed back, since no one else can be working on it.
- `postgresql://...` (store_postgres.py): any number of sidecars share one database. A claim takes the
  row with `FOR UPDATE SKIP LOCKED` and holds it under a lease that the working sidecar renews; when
  a sidecar dies its leases lapse and `recover` (run by every sidecar, periodically) hands the rows
  back. Every write of a leased row names its owner, so a sidecar that lost its lease changes nothing.

The transitions are the same for both: queued -> running -> succeeded | failed -> delivering ->
delivered | dead. A transition names the states it may come from, so a stale caller changes nothing
(and learns it from `StaleJob`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .protocol import JobState, Outcome

STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "delivering", "delivered", "dead")
#: States whose result waits for (another) webhook attempt.
DELIVERABLE: tuple[JobState, ...] = ("succeeded", "failed", "delivering")
#: Columns of a job row, `result` aside (it holds the audio and is read only where needed).
COLUMNS = (
    "id, idempotency_key, request_hash, model_input, webhook_endpoint, public_base, state, outcome, error, "
    "attempts, delivery_attempts, in_flight, created_at, updated_at, started_at, finished_at, "
    "delivered_at, next_attempt_at, last_error, last_status_code, download_token, download_expires_at"
)
INTERRUPTED_RUN = "interrupted: the sidecar stopped during the model call"

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


class Store(Protocol):
    """The job store the service, the runner and the deliverer use; SQLite and PostgreSQL implement it.

    Calls block (sqlite3, psycopg): async callers wrap them in `asyncio.to_thread`.
    """

    #: True when other sidecars share the store (leases matter, `recover` runs periodically).
    shared: bool

    def open(self) -> None: ...
    def close(self) -> None: ...
    def describe(self) -> str:
        """Where the store is, for logs (never a password)."""
        ...

    def create(
        self,
        job_id: str,
        model_input: dict[str, Any],
        webhook_endpoint: str,
        public_base: str,
        request_hash: str,
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]: ...
    def get(self, job_id: str, with_result: bool = False) -> Job | None: ...
    def get_by_download_token(self, token: str) -> Job | None: ...
    def counts(self) -> dict[str, int]: ...
    def next_run_due(self) -> float | None: ...
    def next_delivery_due(self) -> float | None: ...
    def claim_run(self) -> Job | None: ...
    def count_attempt(self, job_id: str, delta: int = 1, error: str | None = None) -> int: ...
    def requeue(self, job_id: str, error: str | None = None, delay_s: float = 0.0) -> None: ...
    def finish(
        self,
        job_id: str,
        outcome: Outcome,
        result: dict[str, Any],
        error: str | None = None,
        status_code: int | None = None,
        download_token: str | None = None,
        download_ttl_s: float = 0.0,
    ) -> None: ...
    def claim_delivery(self) -> Job | None: ...
    def schedule_retry(self, job_id: str, delay_s: float, error: str, status_code: int | None) -> None: ...
    def mark_delivered(self, job_id: str, status_code: int) -> None: ...
    def mark_dead(self, job_id: str, error: str, status_code: int | None) -> None: ...
    def release(self, job_id: str) -> None: ...
    def recover(self, count_interrupted: bool = True) -> tuple[int, int]:
        """Hand back interrupted work; returns (runs, deliveries). SQLite: everything in flight (one
        owner, called at start); PostgreSQL: rows whose lease lapsed (called periodically)."""
        ...

    def renew(self) -> int:
        """Extend the leases this sidecar holds (a no-op without leases); returns how many."""
        ...

    def release_all(self) -> tuple[int, int]:
        """Shutdown: hand back everything this sidecar holds, due at once for whoever is left."""
        ...

    def purge(self, retention_s: float) -> int: ...
