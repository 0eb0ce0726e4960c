"""The single-process job store (`sqlite:///path`): SQLite in WAL mode, one short transaction per change.

States and transitions are in jobs.py. `in_flight` marks a row some task of this process is working on;
only one process owns a store (one pod, one volume), so at start `recover` hands every in-flight row
back: `running` -> `queued`, and `delivering` due at once. `synchronous=FULL` makes a commit survive a
power cut, not only a killed process. Several sidecars need the PostgreSQL store (store_postgres.py).

"One process" is enforced, not assumed (sqlite_file.py): a second sidecar on the same file refuses to
start with the reason.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .jobs import (
    AUDIO_CHUNK_BYTES,
    ENDED,
    FRESH_RUN,
    HAND_BACK_RUN,
    INTERRUPTED_RUN,
    NEW_JOB_COLUMNS,
    NO_CAPS,
    STATES,
    UNFINISHED,
    Caps,
    Job,
    NewJob,
    StaleJob,
    StoreUnavailable,
    TransitionHook,
)
from .jobs import COLUMNS as _COLUMNS
from .protocol import JobState
from .sqlite_file import StoreLocked, migrate, take_file_lock
from .store_base import Store, assignments, new_op, split_chunks

__all__ = ["STATES", "Job", "JobStore", "StaleJob", "StoreLocked"]


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
        self._file_lock: IO[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file_lock = take_file_lock(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        self._db = db
        with self._transaction() as conn:
            migrate(conn, self._write_audio)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._file_lock is not None:
                self._file_lock.close()  # releases the flock
                self._file_lock = None

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

    def owner_key(self) -> bytes:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO store_meta (name, value) VALUES ('owner_key', ?)", (secrets.token_hex(32),)
            )
            value = db.execute("SELECT value FROM store_meta WHERE name = 'owner_key'").fetchone()[0]
        return bytes.fromhex(value)

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
        # `held` needs no check: only this process works on the file.
        values = {**changes, "op_token": op} if op else dict(changes)
        setting, params = assignments(values, lambda name: f":{name}")
        marks = ", ".join(f":from{index}" for index in range(len(allowed_from)))
        params.update({"id": job_id, **{f"from{i}": state for i, state in enumerate(allowed_from)}})
        extra = f" AND ({where})" if where else ""
        with self._transaction() as db:
            cursor = db.execute(f"UPDATE jobs SET {setting} WHERE id = :id AND state IN ({marks}){extra}", params)
            if cursor.rowcount == 1:
                if audio is not None:
                    self._write_audio(db, job_id, audio)
                return True
            return op is not None and self._landed(db, job_id, op)

    @staticmethod
    def _landed(db: sqlite3.Connection, job_id: str, op: str) -> bool:
        return db.execute("SELECT 1 FROM jobs WHERE id = ? AND op_token = ?", (job_id, op)).fetchone() is not None

    @staticmethod
    def _write_audio(db: sqlite3.Connection, job_id: str, audio: bytes) -> None:
        db.execute("DELETE FROM job_audio WHERE job_id = ?", (job_id,))
        db.executemany(
            "INSERT INTO job_audio (job_id, seq, data) VALUES (?, ?, ?)",
            ((job_id, seq, bytes(piece)) for seq, piece in split_chunks(audio, AUDIO_CHUNK_BYTES)),
        )

    def _add_attempts(self, job_id: str, delta: int, error: str | None, op: str) -> int | None:
        with self._transaction() as db:
            row = db.execute(
                "UPDATE jobs SET attempts = attempts + ?, last_error = COALESCE(?, last_error), updated_at = ?, "
                "op_token = ? WHERE id = ? AND state = 'running' AND in_flight = 1 "
                "AND op_token IS NOT ? RETURNING attempts",
                (delta, error, self._clock(), op, job_id, op),
            ).fetchone()
            if row is None:
                row = db.execute(
                    "SELECT attempts FROM jobs WHERE id = ? AND op_token = ? AND state = 'running'", (job_id, op)
                ).fetchone()
        return int(row[0]) if row is not None else None

    # -- intake ----------------------------------------------------------------------------------

    def create(self, new: NewJob, caps: Caps = NO_CAPS) -> tuple[Job, bool]:
        with self._transaction() as db:
            if new.idempotency_key is not None:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = ?", (new.idempotency_key,)
                ).fetchone()
                if row is not None:
                    return Job.from_row(row), False
            if caps.per_caller or caps.total:
                mine, total = db.execute(
                    f"SELECT COALESCE(SUM(owner IS ?), 0), COUNT(*) FROM jobs WHERE {UNFINISHED}",
                    (new.owner,),
                ).fetchone()
                caps.check(int(mine), int(total))
            db.execute(
                f"INSERT INTO jobs ({NEW_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
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

    def read_audio(self, job_id: str) -> Iterator[bytes]:
        seq = 0
        while True:
            with self._lock:
                row = (
                    self._open_db()
                    .execute("SELECT data FROM job_audio WHERE job_id = ? AND seq = ?", (job_id, seq))
                    .fetchone()
                )
            if row is None:
                return
            yield bytes(row[0])
            seq += 1

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

    # -- claims ----------------------------------------------------------------------------------

    def claim_run(self, op: str | None = None) -> Job | None:
        now = self._clock()
        op = op or new_op()
        with self._transaction() as db:
            row = (
                db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE op_token = ? AND state = 'running' AND in_flight = 1", (op,)
                ).fetchone()
                or db.execute(
                    f"UPDATE jobs SET state = 'running', in_flight = 1, started_at = ?, updated_at = ?, op_token = ?, "
                    f"{FRESH_RUN} WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND next_attempt_at <= ? "
                    f"ORDER BY next_attempt_at, created_at LIMIT 1) RETURNING {_COLUMNS}",
                    (now, now, op, now),
                ).fetchone()
            )
        if row is None:
            return None
        self._on_transition("running")
        return Job.from_row(row)

    def claim_delivery(self, op: str | None = None) -> Job | None:
        now = self._clock()
        op = op or new_op()
        with self._transaction() as db:
            again = db.execute(
                f"SELECT {_COLUMNS}, result FROM jobs WHERE op_token = ? AND state = 'delivering' AND in_flight = 1",
                (op,),
            ).fetchone()
            if again is not None:
                return Job.from_row(again)
            due = db.execute(
                "SELECT id, state FROM jobs WHERE state IN ('succeeded', 'failed', 'delivering') "
                "AND in_flight = 0 AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 1",
                (now,),
            ).fetchone()
            if due is None:
                return None
            row = db.execute(
                "UPDATE jobs SET state = 'delivering', in_flight = 1, op_token = ?, "
                "delivery_attempts = delivery_attempts + 1, updated_at = ? "
                f"WHERE id = ? RETURNING {_COLUMNS}, result",
                (op, now, due["id"]),
            ).fetchone()
        if due["state"] != "delivering":  # a retry is no state change
            self._on_transition("delivering")
        return Job.from_row(row)

    # -- housekeeping ----------------------------------------------------------------------------

    def renew(self, job_ids: list[str]) -> set[str]:
        """No leases here: the file has one owner, so every job it works on stays its own."""
        return set(job_ids)

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
        """Forget finished jobs past retention, and audio no delivery or download link needs any more."""
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "DELETE FROM job_audio WHERE job_id IN (SELECT id FROM jobs WHERE state = 'delivered' "
                "AND (download_token IS NULL OR download_expires_at < ?))",
                (now,),
            )
            return db.execute(
                f"DELETE FROM jobs WHERE {ENDED} AND updated_at < ?",
                (now - retention_s,),
            ).rowcount
