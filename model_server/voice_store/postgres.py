"""Custom voices in PostgreSQL, shared by every replica (`BARK_VOICE_STORE=postgresql://...`).

Two tables, made at the first connection under an advisory lock (replicas that start together take
turns): `bark_voices` (one row per voice: owner, name, the `.npz` as bytea, its record) and
`bark_voice_settings` (the owner hash's secret, made once by the first replica; the store's version).
Every change bumps the version and `NOTIFY`s channel `bark_voices` in the same transaction, so a
replica that `LISTEN`s hears of it when it commits; one that missed a notification (its listening
connection was down) compares versions after every wait and reloads on a difference.

Nothing here waits long: a connection attempt gives up after `connect_timeout_s` and a statement
after 5 s, raising StoreUnavailable; the server starts and serves presets with the database down.
Each call opens its own short connection, no pool: calls are rare (an upload, a delete, a voice's
first use on a replica, an index reload after a change), and a pool's reconnection backoff kept a
replica degraded for tens of seconds after the database was back (measured in tests/voices).
The listening connection checks the version at least every `listen_s` (5 s) besides notifications.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from model_server.voice_store.records import StoreUnavailable, VoiceRecord

TABLE = "bark_voices"
SETTINGS = "bark_voice_settings"
CHANNEL = "bark_voices"
#: `pg_advisory_xact_lock` key serialising the schema's creation ("barkvoic" in ASCII).
SCHEMA_LOCK = 0x6261726B766F6963

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        owner text NOT NULL,
        name text NOT NULL,
        digest text NOT NULL,
        npz bytea NOT NULL,
        consent text NOT NULL,
        language text,
        description text,
        created_at timestamptz NOT NULL DEFAULT now(),
        published boolean NOT NULL DEFAULT false,
        PRIMARY KEY (owner, name)
    )""",
    f"CREATE TABLE IF NOT EXISTS {SETTINGS} (key text PRIMARY KEY, value text NOT NULL)",
    f"INSERT INTO {SETTINGS} (key, value) VALUES ('version', '0') ON CONFLICT (key) DO NOTHING",
)
_COLUMNS = "owner, name, digest, consent, language, description, created_at, published"


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable URL>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class PostgresVoiceStore:
    """The voice store on PostgreSQL: a short connection per call, one long one that listens."""

    kind = "postgres"

    def __init__(self, url: str, connect_timeout_s: int = 3, listen_s: float = 5.0):
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._listen_s = listen_s
        self._schema_ready = False
        self._listener: psycopg.Connection[Any] | None = None
        self._listener_stale = False
        #: This process's own channel: `wake()` notifies it, so a closing replica disturbs no other.
        self._wake_channel = f"{CHANNEL}_wake_{secrets.token_hex(8)}"

    def describe(self) -> str:
        return redact(self.url)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        try:
            with psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=self._connect_timeout_s,
                options="-c statement_timeout=5000",
            ) as conn:
                if not self._schema_ready:
                    self._create_schema(conn)
                yield conn
        except psycopg.errors.UndefinedTable as error:  # dropped, or a database restored without them
            self._schema_ready = False
            raise StoreUnavailable(f"PostgreSQL {self.describe()}: the voice tables are missing: {error}") from error
        except psycopg.Error as error:  # unreachable, or refusing (permissions, read-only, a timeout)
            self._listener_stale = True  # it likely lost the server too: the watcher makes a new one
            raise StoreUnavailable(f"PostgreSQL {self.describe()} unavailable: {error}") from error

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)  # type: ignore[arg-type]
        self._schema_ready = True

    def _changed(self, conn: psycopg.Connection[Any]) -> None:
        """Inside a write's transaction: the next version, announced when it commits."""
        row = conn.execute(
            f"UPDATE {SETTINGS} SET value = (value::bigint + 1)::text WHERE key = 'version' RETURNING value"
        ).fetchone()
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, row["value"] if row else ""))

    def owner_secret(self) -> bytes:
        with self._conn() as conn:
            conn.execute(
                f"INSERT INTO {SETTINGS} (key, value) VALUES ('owner_secret', %s) ON CONFLICT (key) DO NOTHING",
                (secrets.token_hex(32),),
            )
            row = conn.execute(f"SELECT value FROM {SETTINGS} WHERE key = 'owner_secret'").fetchone()
        assert row is not None
        return bytes.fromhex(row["value"])

    def version(self) -> str:
        with self._conn() as conn:
            row = conn.execute(f"SELECT value FROM {SETTINGS} WHERE key = 'version'").fetchone()
        return str(row["value"]) if row else "0"

    def records(self) -> list[VoiceRecord]:
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY owner, name").fetchall()
        return [VoiceRecord(**row) for row in rows]

    def read(self, owner: str, name: str) -> bytes | None:
        with self._conn() as conn:
            row = conn.execute(f"SELECT npz FROM {TABLE} WHERE owner = %s AND name = %s", (owner, name)).fetchone()
        return bytes(row["npz"]) if row else None

    def add(self, record: VoiceRecord, npz: bytes) -> bool:
        with self._conn() as conn, conn.transaction():
            inserted = conn.execute(
                f"INSERT INTO {TABLE} ({_COLUMNS}, npz) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (owner, name) DO NOTHING",
                (
                    record.owner,
                    record.name,
                    record.digest,
                    record.consent,
                    record.language,
                    record.description,
                    record.created_at,
                    record.published,
                    npz,
                ),
            ).rowcount
            if inserted:
                self._changed(conn)
        return bool(inserted)

    def delete(self, owner: str, name: str) -> bool:
        with self._conn() as conn, conn.transaction():
            deleted = conn.execute(f"DELETE FROM {TABLE} WHERE owner = %s AND name = %s", (owner, name)).rowcount
            if deleted:
                self._changed(conn)
        return bool(deleted)

    def set_published(self, owner: str, name: str, published: bool) -> bool:
        with self._conn() as conn, conn.transaction():
            updated = conn.execute(
                f"UPDATE {TABLE} SET published = %s WHERE owner = %s AND name = %s", (published, owner, name)
            ).rowcount
            if updated:
                self._changed(conn)
        return bool(updated)

    def wait_for_change(self, timeout_s: float) -> None:
        """Block until a notification on `bark_voices` or `timeout_s`; StoreUnavailable if the
        listening connection cannot be (re)made, so the catalog knows it may have missed some."""
        try:
            if self._listener_stale:
                self._listener_stale = False
                self._drop_listener()
            if self._listener is None or self._listener.closed:
                self._listener = psycopg.connect(self.url, autocommit=True, connect_timeout=self._connect_timeout_s)
                self._listener.execute(f"LISTEN {CHANNEL}")
                self._listener.execute(f"LISTEN {self._wake_channel}")
                return  # listening anew: what changed before is not announced again, so look now
            for _ in self._listener.notifies(timeout=max(timeout_s, self._listen_s), stop_after=1):
                break
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            self._drop_listener()
            raise StoreUnavailable(f"PostgreSQL {self.describe()}: listening failed: {error}") from error

    def wake(self) -> None:
        with contextlib.suppress(StoreUnavailable), self._conn() as conn:  # unreachable: the wait ends on its own
            conn.execute("SELECT pg_notify(%s, '')", (self._wake_channel,))

    def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()
            self._listener = None

    def close(self) -> None:
        self._drop_listener()
