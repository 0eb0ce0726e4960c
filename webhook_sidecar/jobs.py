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

Every transition and claim takes an `op` token, written with the change (`op_token`): a caller whose reply
was lost (the database restarted after the commit) retries with the same token and learns that the change
already landed instead of reading `StaleJob` (see leases.py, `until_landed`). The audio of a result is
stored as its encoded bytes in chunks (`AUDIO_CHUNK_BYTES`) of a table of its own, written in the same
transaction as the result and read only by what delivers it (inline webhooks, downloads), a chunk at a time;
`result` holds the rest of the prediction (format, duration, segments, captions...) as JSON.
"""

from __future__ import annotations

import json
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
#: Columns of a job row, `result` aside (read only where it is delivered).
COLUMNS = (
    "id, idempotency_key, request_hash, model_input, webhook_endpoint, public_base, state, outcome, error, "
    "attempts, delivery_attempts, in_flight, created_at, updated_at, started_at, finished_at, "
    "delivered_at, next_attempt_at, last_error, last_status_code, download_token, download_expires_at, "
    "chunks_done, chunks_total, cancel_requested_at, owner, handbacks, audio_bytes"
)
#: Audio is stored and read in chunks of this size: a download or a store write holds one at a time.
AUDIO_CHUNK_BYTES = 1024 * 1024
#: States of a job that still waits for or holds a model call: what the intake caps count.
UNFINISHED = "state IN ('queued', 'running')"
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


class QueueFull(RuntimeError):
    """Intake over a cap of unfinished jobs (`scope`: "caller" or "total"): HTTP 429, retry later."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"{limit} unfinished jobs {'for this API key' if scope == 'caller' else 'in all'}")
        self.scope = scope
        self.limit = limit


@dataclass(frozen=True)
class Caps:
    """Intake caps: unfinished (queued or running) jobs per caller and in all; 0 means no cap."""

    per_caller: int = 0
    total: int = 0

    def check(self, mine: int, total: int) -> None:
        """QueueFull when one more unfinished job would pass a cap (the caller's first: theirs to act on)."""
        if self.per_caller and mine >= self.per_caller:
            raise QueueFull("caller", self.per_caller)
        if self.total and total >= self.total:
            raise QueueFull("total", self.total)


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
    #: Who created it: a keyed hash of the API key (auth.py), None with auth off.
    owner: str | None = None
    #: Runs handed back because the model server could not take them (not counted as attempts).
    handbacks: int = 0
    #: Size of the stored audio (encoded bytes), None without audio.
    audio_bytes: int | None = None
    #: The prediction but its audio (or the failure), as delivered; loaded only where it is delivered.
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
    "id, idempotency_key, request_hash, model_input, webhook_endpoint, public_base, owner, state, "
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
    owner: str | None = None

    def insert_values(self, now: float) -> tuple[Any, ...]:
        """The values of NEW_JOB_COLUMNS but `state`: queued, created and due `now`."""
        identity = (self.id, self.idempotency_key, self.request_hash, json.dumps(self.model_input))
        return (*identity, self.webhook_endpoint, self.public_base, self.owner, now, now, now)


#: No cap at all (the default of `Store.create`).
NO_CAPS = Caps()
