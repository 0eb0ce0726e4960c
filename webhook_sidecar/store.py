"""The single-process job store (`sqlite:///path`): SQLite in WAL mode, one short transaction per change.

States and transitions are in jobs.py. `in_flight` marks a row some task of this process is working on;
only one process owns a store (one pod, one volume), so at start `recover` hands every in-flight row
back: `running` -> `queued`, and `delivering` due at once. `synchronous=FULL` makes a commit survive a
power cut, not only a killed process. Several sidecars need the PostgreSQL store (store_postgres.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .jobs import COLUMNS as _COLUMNS
from .jobs import (
    ENDED,
    FRESH_RUN,
    HAND_BACK_RUN,
    INTERRUPTED_RUN,
    NEW_JOB_COLUMNS,
    STATES,
    Job,
    NewJob,
    StaleJob,
    Store,
    StoreUnavailable,
    TransitionHook,
)
from .protocol import JobState

__all__ = ["STATES", "Job", "JobStore", "StaleJob"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT NOT NULL,
    model_input TEXT NOT NULL,
    webhook_endpoint TEXT NOT NULL,
    public_base TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    delivered_at REAL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    last_status_code INTEGER,
    result TEXT,
    download_token TEXT UNIQUE,
    download_expires_at REAL,
    chunks_done INTEGER,
    chunks_total INTEGER,
    cancel_requested_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, in_flight, next_attempt_at);
"""
#: Columns added after the first release: `CREATE TABLE IF NOT EXISTS` leaves an older file without them.
_ADDED_COLUMNS = {"chunks_done": "INTEGER", "chunks_total": "INTEGER", "cancel_requested_at": "REAL"}


class JobStore(Store):
    """Thread-safe access to one SQLite file; async callers wrap calls in `asyncio.to_thread`."""

    shared = False
    _IDLE = {"in_flight": 0}

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        on_transition: TransitionHook | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        self._on_transition = on_transition or (lambda _state: None)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Upgrade a file an older sidecar created (nullable columns: its rows stay valid)."""
        with self._transaction() as db:
            present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in present:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("job store is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front, so read-then-write cannot interleave."""
        with self._lock:
            db = self._open_db()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:  # locked past the timeout, disk I/O error
                raise StoreUnavailable(f"SQLite unavailable: {error}") from error
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _update(
        self,
        job_id: str,
        allowed_from: tuple[JobState, ...],
        changes: Mapping[str, Any],
        held: bool,
        where: str = "",
    ) -> bool:
        # `held` needs no check: only this process works on the file.
        assignments = ", ".join(f"{name} = :{name}" for name in changes)
        marks = ", ".join(f":from{index}" for index in range(len(allowed_from)))
        params = {**changes, "id": job_id, **{f"from{i}": state for i, state in enumerate(allowed_from)}}
        extra = f" AND ({where})" if where else ""
        with self._transaction() as db:
            cursor = db.execute(f"UPDATE jobs SET {assignments} WHERE id = :id AND state IN ({marks}){extra}", params)
            return cursor.rowcount == 1

    # -- intake ----------------------------------------------------------------------------------

    def create(self, new: NewJob) -> tuple[Job, bool]:
        """Store a queued job and commit; with a known idempotency key return that job instead."""
        with self._transaction() as db:
            if new.idempotency_key is not None:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = ?", (new.idempotency_key,)
                ).fetchone()
                if row is not None:
                    return Job.from_row(row), False
            db.execute(
                f"INSERT INTO jobs ({NEW_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                new.insert_values(self._clock()),
            )
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (new.id,)).fetchone()
        self._on_transition("queued")
        return Job.from_row(row), True

    # -- reads -----------------------------------------------------------------------------------

    def get(self, job_id: str, with_result: bool = False) -> Job | None:
        columns = _COLUMNS + (", result" if with_result else "")
        with self._lock:
            row = self._open_db().execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row is not None else None

    def get_by_download_token(self, token: str) -> Job | None:
        with self._lock:
            row = (
                self._open_db()
                .execute(f"SELECT {_COLUMNS}, result FROM jobs WHERE download_token = ?", (token,))
                .fetchone()
            )
        return Job.from_row(row) if row is not None else None

    def counts(self) -> dict[str, int]:
        """Jobs per state, every state present (a gauge should read 0, not vanish)."""
        with self._lock:
            rows = self._open_db().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        counts.update({row[0]: row[1] for row in rows})
        return counts

    def _min_due(self, where: str) -> float | None:
        with self._lock:
            value = self._open_db().execute(f"SELECT MIN(next_attempt_at) FROM jobs WHERE {where}").fetchone()[0]
        return float(value) if value is not None else None

    # -- running ---------------------------------------------------------------------------------

    def claim_run(self) -> Job | None:
        """Take the oldest due queued job: it becomes `running` and ours."""
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                f"UPDATE jobs SET state = 'running', in_flight = 1, started_at = ?, updated_at = ?, {FRESH_RUN} "
                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND next_attempt_at <= ? "
                f"ORDER BY next_attempt_at, created_at LIMIT 1) RETURNING {_COLUMNS}",
                (now, now, now),
            ).fetchone()
        if row is None:
            return None
        self._on_transition("running")
        return Job.from_row(row)

    def count_attempt(self, job_id: str, delta: int = 1, error: str | None = None) -> int:
        """Count `delta` model calls (0: only note the error); returns the new count."""
        with self._transaction() as db:
            row = db.execute(
                "UPDATE jobs SET attempts = attempts + ?, last_error = COALESCE(?, last_error), "
                "updated_at = ? WHERE id = ? RETURNING attempts",
                (delta, error, self._clock(), job_id),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    # -- delivering ------------------------------------------------------------------------------

    def claim_delivery(self) -> Job | None:
        """Take the most overdue deliverable job, counting the attempt before it is made."""
        now = self._clock()
        with self._transaction() as db:
            due = db.execute(
                "SELECT id, state FROM jobs WHERE state IN ('succeeded', 'failed', 'delivering') "
                "AND in_flight = 0 AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 1",
                (now,),
            ).fetchone()
            if due is None:
                return None
            row = db.execute(
                "UPDATE jobs SET state = 'delivering', in_flight = 1, "
                "delivery_attempts = delivery_attempts + 1, updated_at = ? "
                f"WHERE id = ? RETURNING {_COLUMNS}, result",
                (now, due["id"]),
            ).fetchone()
        if due["state"] != "delivering":  # a retry is no state change
            self._on_transition("delivering")
        return Job.from_row(row)

    def mark_delivered(self, job_id: str, status_code: int) -> None:
        """Done. The audio is dropped unless a download link still needs it."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = 'delivered', in_flight = 0, delivered_at = :now, updated_at = :now, "
                "last_status_code = :code, last_error = NULL, "
                "result = CASE WHEN download_token IS NULL THEN NULL ELSE result END "
                "WHERE id = :id AND state = 'delivering'",
                {"now": self._clock(), "code": status_code, "id": job_id},
            )
            if cursor.rowcount != 1:
                raise StaleJob(f"job {job_id} is not delivering")
        self._on_transition("delivered")

    def release(self, job_id: str) -> None:
        """A delivery cut short (shutdown): due again at once, the attempt stays counted."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET in_flight = 0, next_attempt_at = ?, updated_at = ? "
                "WHERE id = ? AND state = 'delivering'",
                (self._clock(), self._clock(), job_id),
            )

    # -- housekeeping ----------------------------------------------------------------------------

    def renew(self) -> int:
        """No leases here: the file has one owner."""
        return 0

    def release_all(self) -> tuple[int, int]:
        """Shutdown: whatever is still in flight goes back (the cut-short call is not counted)."""
        return self.recover(count_interrupted=False)

    def recover(self, count_interrupted: bool = True) -> tuple[int, int]:
        """At start: what a previous process left in flight is ours to redo. Returns (runs, deliveries).

        A run found `running` was cut short mid-call (a crash): it counts as an attempt; one its caller
        cancelled ends `cancelled`.
        """
        now = self._clock()
        handed_back = HAND_BACK_RUN.format(now=":now", count=":count", error=":error")
        with self._transaction() as db:
            ended = db.execute(
                f"UPDATE jobs SET {handed_back}, in_flight = 0, next_attempt_at = :now, updated_at = :now "
                "WHERE state = 'running' RETURNING state",
                {"now": now, "count": int(count_interrupted), "error": INTERRUPTED_RUN},
            ).fetchall()
            deliveries = db.execute(
                "UPDATE jobs SET in_flight = 0, next_attempt_at = ?, updated_at = ? "
                "WHERE state = 'delivering' AND in_flight = 1",
                (now, now),
            ).rowcount
        for row in ended:
            self._on_transition(row["state"])
        return len(ended), deliveries

    def purge(self, retention_s: float) -> int:
        """Forget finished jobs past retention, and audio whose download link expired."""
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET result = NULL WHERE state = 'delivered' AND download_expires_at < ? "
                "AND result IS NOT NULL",
                (now,),
            )
            return db.execute(
                f"DELETE FROM jobs WHERE {ENDED} AND updated_at < ?",
                (now - retention_s,),
            ).rowcount
