"""The SQLite job store's file: its schema, the upgrade of a file an older sidecar made, and the lock that
makes it one process's.

`take_file_lock` holds an exclusive `flock` on `<file>.lock` for the life of the store: a second sidecar
on the same file (a rolling update that briefly runs an old and a new pod on one volume) refuses to
start with the reason, instead of each one's `recover` and `release_all` handing back the other's running
jobs. The kernel drops the lock when the process dies, so a crash never leaves the file locked.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO

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
CREATE TABLE IF NOT EXISTS job_audio (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Columns added after the first release: `CREATE TABLE IF NOT EXISTS` leaves an older file without them.
_ADDED_COLUMNS = {
    "chunks_done": "INTEGER",
    "chunks_total": "INTEGER",
    "cancel_requested_at": "REAL",
    "owner": "TEXT",
    "handbacks": "INTEGER NOT NULL DEFAULT 0",
    "audio_bytes": "INTEGER",
    "op_token": "TEXT",
}


class StoreLocked(RuntimeError):
    """Another process holds this SQLite file: one sidecar per file (use PostgreSQL to share)."""


def take_file_lock(path: Path) -> IO[str]:
    """flock `<file>.lock`, held as long as the returned file stays open; StoreLocked naming the holder."""
    lock_path = path.with_name(path.name + ".lock")
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StoreLocked(
            f"{path} is in use by {holder}: a SQLite job store belongs to one sidecar "
            "(use the PostgreSQL store to share jobs between replicas)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def migrate(db: sqlite3.Connection, write_audio: Callable[[sqlite3.Connection, str, bytes], None]) -> None:
    """Create the tables, or upgrade a file an older sidecar made: missing columns added (nullable or with
    a default: its rows stay valid), and audio it kept as base64 inside `result` moved to job_audio."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, state)")
    rows = db.execute(
        "SELECT id, result FROM jobs WHERE result IS NOT NULL AND audio_bytes IS NULL AND result LIKE '%\"audio\"%'"
    ).fetchall()
    for row in rows:
        result = json.loads(row["result"])
        audio = base64.b64decode(result.pop("audio", "") or "")
        write_audio(db, row["id"], audio)
        db.execute(
            "UPDATE jobs SET result = ?, audio_bytes = ? WHERE id = ?", (json.dumps(result), len(audio), row["id"])
        )
