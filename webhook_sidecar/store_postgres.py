"""The shared job store (`postgresql://...`): any number of sidecars, one database, leases.

- Claims take the most overdue row with `FOR UPDATE SKIP LOCKED` (two sidecars never wait on or take
  the same row) and stamp it with this sidecar's `lease_owner` and a `lease_expires_at` that the
  service renews (leases.py) for the ids it holds in memory, and only those: a row this sidecar lost
  track of (a reply lost in a database restart) lapses and goes back.
- Every later write of a claimed row names its owner: a sidecar whose lease lapsed (it hung, lost the
  network) finds its job taken over and changes nothing (`StaleJob`).
- `recover` runs on every sidecar every few seconds: rows whose lease lapsed (a sidecar SIGKILLed, a
  node lost) go back: a run to `queued` (the cut-short call counts as an attempt), a delivery due at
  once. The result and `webhook-id` are stored, so a redelivery is the same message.
- `release_all` (SIGTERM) hands back what this sidecar holds at once instead of letting leases lapse.
- Lease times use the database's clock (`clock_timestamp()`), so pods with skewed clocks agree; the
  other timestamps are the sidecar's, like the SQLite store's.
- Schema migrations (migrations.py) run at start under `pg_advisory_xact_lock`.

psycopg 3 with a connection pool; calls block, the service runs them in threads like SQLite's.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from .jobs import (
    AUDIO_CHUNK_BYTES,
    COLUMNS,
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
from .migrations import TABLE, migrate
from .protocol import JobState
from .store_base import Store, assignments, new_op, split_chunks

_DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
LEASE_LAPSED = "interrupted: the sidecar running it stopped (its lease lapsed)"


def redact(url: str) -> str:
    """`postgresql://user@host:port/db`: the DSN without its password, for logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable DSN>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class PostgresJobStore(Store):
    """The `Store` interface on PostgreSQL, shared by every sidecar of a deployment."""

    shared = True
    # The lease ends with a transition: every one leaves the row idle.
    _IDLE = {"in_flight": False, "lease_owner": None, "lease_expires_at": None}

    def __init__(
        self,
        url: str,
        lease_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        on_transition: TransitionHook | None = None,
        pool_size: int = 10,
        connect_timeout_s: float = 60.0,
        wait_s: float = 10.0,
    ) -> None:
        self.url = url
        self.lease_s = lease_s
        #: Who holds a lease: unique per process start (a restarted pod is a new owner).
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._clock = clock
        self._on_transition = on_transition or (lambda _state: None)
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._wait_s = wait_s
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (waiting up to `connect_timeout_s` for the server) and bring the schema up to date."""
        pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            check=ConnectionPool.check_connection,  # a restarted server leaves dead connections behind
            timeout=self._wait_s,  # a call waits this long for a connection, then StoreUnavailable
            open=False,
            name="sidecar-jobs",
        )
        pool.open(wait=True, timeout=self._connect_timeout_s)
        self._pool = pool
        with pool.connection() as conn:
            migrate(conn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def describe(self) -> str:
        return redact(self.url)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection; the database unreachable or failing over raises StoreUnavailable."""
        if self._pool is None:
            raise RuntimeError("job store is not open")
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as error:
            raise StoreUnavailable(f"PostgreSQL unavailable: {error}") from error

    def _one(self, sql: str, params: dict[str, Any] | Sequence[Any] = ()) -> dict[str, Any] | None:
        with self._conn() as conn:
            row: dict[str, Any] | None = conn.execute(sql, params).fetchone()
            return row

    def _rowcount(self, sql: str, params: dict[str, Any]) -> int:
        with self._conn() as conn:
            return int(conn.execute(sql, params).rowcount)

    def owner_key(self) -> bytes:
        row = self._one(
            f"WITH made AS (INSERT INTO {TABLE}_meta (name, value) VALUES ('owner_key', %s) "
            "ON CONFLICT (name) DO NOTHING RETURNING value) "
            f"SELECT value FROM made UNION ALL SELECT value FROM {TABLE}_meta WHERE name = 'owner_key'",
            (secrets.token_hex(32),),
        )
        assert row is not None
        return bytes.fromhex(row["value"])

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
        values = {**changes, "op_token": op} if op else dict(changes)
        setting, params = assignments(values, lambda name: f"%({name})s")
        params.update({"id": job_id, "allowed": list(allowed_from), "me": self.owner, "op": op})
        conditions = "id = %(id)s AND state = ANY(%(allowed)s)"
        if held:
            conditions += " AND lease_owner = %(me)s"
        if where:
            conditions += f" AND ({where})"
        with self._conn() as conn, conn.transaction():
            if conn.execute(f"UPDATE {TABLE} SET {setting} WHERE {conditions}", params).rowcount == 1:
                if audio is not None:
                    self._write_audio(conn, job_id, audio)
                return True
            if op is None:
                return False
            return (
                conn.execute(f"SELECT 1 FROM {TABLE} WHERE id = %(id)s AND op_token = %(op)s", params).fetchone()
                is not None
            )

    @staticmethod
    def _write_audio(conn: psycopg.Connection[dict[str, Any]], job_id: str, audio: bytes) -> None:
        conn.execute(f"DELETE FROM {TABLE}_audio WHERE job_id = %s", (job_id,))
        with conn.cursor() as cursor:
            for seq, piece in split_chunks(audio, AUDIO_CHUNK_BYTES):
                cursor.execute(
                    f"INSERT INTO {TABLE}_audio (job_id, seq, data) VALUES (%s, %s, %s)", (job_id, seq, piece)
                )

    def _add_attempts(self, job_id: str, delta: int, error: str | None, op: str) -> int | None:
        params = {"delta": delta, "error": error, "now": self._clock(), "id": job_id, "me": self.owner, "op": op}
        held = "id = %(id)s AND state = 'running' AND lease_owner = %(me)s"
        with self._conn() as conn:
            row = (
                conn.execute(
                    f"UPDATE {TABLE} SET attempts = attempts + %(delta)s, "
                    "last_error = COALESCE(%(error)s, last_error), "
                    f"updated_at = %(now)s, op_token = %(op)s WHERE {held} AND op_token IS DISTINCT FROM %(op)s "
                    "RETURNING attempts",
                    params,
                ).fetchone()
                or conn.execute(f"SELECT attempts FROM {TABLE} WHERE {held} AND op_token = %(op)s", params).fetchone()
            )
        return int(row["attempts"]) if row is not None else None

    # -- intake ----------------------------------------------------------------------------------

    def create(self, new: NewJob, caps: Caps = NO_CAPS) -> tuple[Job, bool]:
        """Insert a queued job; a known idempotency key (from any replica) returns that job instead."""
        if new.idempotency_key is not None and (known := self._by_idempotency_key(new.idempotency_key)) is not None:
            return known, False
        if caps.per_caller or caps.total:
            counted = self._one(
                f"SELECT count(*) FILTER (WHERE owner IS NOT DISTINCT FROM %s) AS mine, count(*) AS total "
                f"FROM {TABLE} WHERE {UNFINISHED}",
                (new.owner,),
            )
            assert counted is not None
            caps.check(int(counted["mine"]), int(counted["total"]))
        row = self._one(
            f"INSERT INTO {TABLE} ({NEW_JOB_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s) "
            f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}",
            new.insert_values(self._clock()),
        )
        if row is None:  # the key exists: committed by someone else, so it is visible now
            existing = self._by_idempotency_key(new.idempotency_key or "")
            if existing is None:
                raise StaleJob("idempotency key conflict on a job that vanished (purged?)")
            return existing, False
        self._on_transition("queued")
        return Job.from_row(row), True

    def _by_idempotency_key(self, key: str) -> Job | None:
        row = self._one(f"SELECT {COLUMNS} FROM {TABLE} WHERE idempotency_key = %s", (key,))
        return Job.from_row(row) if row is not None else None

    # -- reads -----------------------------------------------------------------------------------

    def get(self, job_id: str, with_result: bool = False) -> Job | None:
        columns = COLUMNS + (", result" if with_result else "")
        row = self._one(f"SELECT {columns} FROM {TABLE} WHERE id = %s", (job_id,))
        return Job.from_row(row) if row is not None else None

    def get_by_download_token(self, token: str) -> Job | None:
        row = self._one(f"SELECT {COLUMNS}, result FROM {TABLE} WHERE download_token = %s", (token,))
        return Job.from_row(row) if row is not None else None

    def read_audio(self, job_id: str) -> Iterator[bytes]:
        seq = 0
        while (
            row := self._one(f"SELECT data FROM {TABLE}_audio WHERE job_id = %s AND seq = %s", (job_id, seq))
        ) is not None:
            yield bytes(row["data"])
            seq += 1

    def counts(self) -> dict[str, int]:
        """Jobs per state in the whole store (every replica reports the same numbers)."""
        with self._conn() as conn:
            rows = conn.execute(f"SELECT state, COUNT(*) AS n FROM {TABLE} GROUP BY state").fetchall()
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: int(row["n"]) for row in rows})
        return counts

    def _min_due(self, where: str) -> float | None:
        row = self._one(f"SELECT MIN(next_attempt_at) AS due FROM {TABLE} WHERE {where}")
        return float(row["due"]) if row is not None and row["due"] is not None else None

    # -- claims ----------------------------------------------------------------------------------

    def claim_run(self, op: str | None = None) -> Job | None:
        """Take the oldest due queued job under a lease: it becomes `running` and ours."""
        op = op or new_op()
        row = self._claim(
            op,
            "running",
            f"UPDATE {TABLE} SET state = 'running', in_flight = true, started_at = %(now)s, op_token = %(op)s, "
            f"updated_at = %(now)s, lease_owner = %(me)s, lease_expires_at = {_DB_NOW} + %(lease)s, {FRESH_RUN} "
            f"WHERE id = (SELECT id FROM {TABLE} WHERE state = 'queued' AND next_attempt_at <= %(now)s "
            "ORDER BY next_attempt_at, created_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {COLUMNS}",
        )
        if row is not None:
            self._on_transition("running")
        return Job.from_row(row) if row is not None else None

    def claim_delivery(self, op: str | None = None) -> Job | None:
        """Take the most overdue deliverable job under a lease, counting the attempt before it is made."""
        row = self._claim(
            op or new_op(),
            "delivering",
            f"WITH due AS (SELECT id, state AS prior FROM {TABLE} "
            "WHERE state IN ('succeeded', 'failed', 'delivering') AND NOT in_flight "
            "AND next_attempt_at <= %(now)s ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {TABLE} AS j SET state = 'delivering', in_flight = true, op_token = %(op)s, "
            "delivery_attempts = j.delivery_attempts + 1, updated_at = %(now)s, lease_owner = %(me)s, "
            f"lease_expires_at = {_DB_NOW} + %(lease)s FROM due WHERE j.id = due.id RETURNING due.prior, j.*",
        )
        if row is None:
            return None
        if row["prior"] != "delivering":  # a retry is no state change
            self._on_transition("delivering")
        return Job.from_row(row)

    def _claim(self, op: str, state: str, sql: str) -> dict[str, Any] | None:
        """Run a claim (`%(now)s`, `%(me)s`, `%(lease)s`, `%(op)s`); a retry of one that landed while its
        reply was lost finds its row by `op` (marked `prior = state`, so it is not reported twice)."""
        params = {"now": self._clock(), "me": self.owner, "lease": self.lease_s, "op": op, "state": state}
        with self._conn() as conn:
            landed: dict[str, Any] | None = conn.execute(
                # `in_flight` (as every claimed row is) lets the planner read the `_leased` partial
                # index instead of the whole table, finished jobs included, on every poll.
                f"SELECT *, state AS prior FROM {TABLE} WHERE in_flight AND op_token = %(op)s "
                "AND state = %(state)s AND lease_owner = %(me)s",
                params,
            ).fetchone()
            return landed or conn.execute(sql, params).fetchone()

    # -- leases and housekeeping ------------------------------------------------------------------

    def renew(self, job_ids: list[str]) -> set[str]:
        """Push out the leases of these jobs, which this sidecar works on; the ids still its own."""
        if not job_ids:
            return set()
        with self._conn() as conn:
            rows = conn.execute(
                f"UPDATE {TABLE} SET lease_expires_at = {_DB_NOW} + %(lease)s "
                "WHERE id = ANY(%(ids)s) AND lease_owner = %(me)s AND in_flight RETURNING id",
                {"lease": self.lease_s, "me": self.owner, "ids": job_ids},
            ).fetchall()
        return {row["id"] for row in rows}

    def recover(self, count_interrupted: bool = True) -> tuple[int, int]:
        """Take over rows whose lease lapsed (their sidecar died): runs re-queued, deliveries due now."""
        return self._hand_back(f"lease_expires_at < {_DB_NOW}", {}, count_interrupted, LEASE_LAPSED)

    def release_all(self) -> tuple[int, int]:
        """SIGTERM: everything this sidecar holds goes back now (no waiting for the lease to lapse)."""
        return self._hand_back("lease_owner = %(me)s", {"me": self.owner}, False, INTERRUPTED_RUN)

    def _hand_back(self, which: str, params: dict[str, Any], count: bool, error: str) -> tuple[int, int]:
        now = self._clock()
        params = {**params, "now": now, "count": int(count), "error": error}
        ended = "in_flight = false, lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = %(now)s"
        handed_back = HAND_BACK_RUN.format(now="%(now)s", count="%(count)s", error="%(error)s")
        with self._conn() as conn:
            runs = conn.execute(
                f"UPDATE {TABLE} SET {handed_back}, {ended}, updated_at = %(now)s "
                f"WHERE state = 'running' AND in_flight AND {which} RETURNING state",
                params,
            ).fetchall()
            deliveries = conn.execute(
                f"UPDATE {TABLE} SET {ended}, updated_at = %(now)s "
                f"WHERE state = 'delivering' AND in_flight AND {which}",
                params,
            ).rowcount
        for row in runs:  # queued again, or cancelled at its caller's request
            self._on_transition(row["state"])
        return len(runs), int(deliveries)

    def purge(self, retention_s: float) -> int:
        """Forget finished jobs past retention, and audio no delivery or download link needs any more."""
        now = self._clock()
        with self._conn() as conn:
            conn.execute(
                f"DELETE FROM {TABLE}_audio WHERE job_id IN (SELECT id FROM {TABLE} WHERE state = 'delivered' "
                "AND (download_token IS NULL OR download_expires_at < %s))",
                (now,),
            )
            return int(
                conn.execute(
                    f"DELETE FROM {TABLE} WHERE {ENDED} AND updated_at < %s",
                    (now - retention_s,),
                ).rowcount
            )
