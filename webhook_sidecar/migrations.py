"""The PostgreSQL job store's schema, migrated when a sidecar starts.

Each migration runs once, in one transaction under `pg_advisory_xact_lock`: sidecars that start
together (a rollout, a scale-up) serialise on the lock, the first applies what is missing and the
others find it done. A database already up to date is left alone. Append only: a released migration
never changes; a new column or index is a new version.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import tuple_row

TABLE = "bark_jobs"
#: `pg_advisory_xact_lock` key serialising migrations ("barkjobs" in ASCII).
MIGRATION_LOCK = 0x6261726B6A6F6273

#: (version, statements). Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE {TABLE} (
                id text PRIMARY KEY,
                idempotency_key text UNIQUE,
                request_hash text NOT NULL,
                model_input text NOT NULL,
                webhook_endpoint text NOT NULL,
                public_base text NOT NULL,
                state text NOT NULL,
                outcome text,
                error text,
                attempts integer NOT NULL DEFAULT 0,
                delivery_attempts integer NOT NULL DEFAULT 0,
                in_flight boolean NOT NULL DEFAULT false,
                created_at double precision NOT NULL,
                updated_at double precision NOT NULL,
                started_at double precision,
                finished_at double precision,
                delivered_at double precision,
                next_attempt_at double precision NOT NULL,
                last_error text,
                last_status_code integer,
                result text,
                download_token text UNIQUE,
                download_expires_at double precision,
                lease_owner text,
                lease_expires_at double precision
            )""",
            f"CREATE INDEX {TABLE}_queued ON {TABLE} (next_attempt_at, created_at) WHERE state = 'queued'",
            f"CREATE INDEX {TABLE}_deliverable ON {TABLE} (next_attempt_at) "
            "WHERE state IN ('succeeded', 'failed', 'delivering') AND NOT in_flight",
            f"CREATE INDEX {TABLE}_leased ON {TABLE} (lease_expires_at) WHERE in_flight",
            f"CREATE INDEX {TABLE}_finished ON {TABLE} (updated_at) WHERE state IN ('delivered', 'dead')",
        ),
    ),
    # The model server's progress on a running job (`GET /jobs/{id}` shows it).
    (2, (f"ALTER TABLE {TABLE} ADD COLUMN chunks_done integer, ADD COLUMN chunks_total integer",)),
    # Cancelling a job (`DELETE /jobs/{id}`): when it was asked; cancelled jobs are purged like finished ones.
    (
        3,
        (
            f"ALTER TABLE {TABLE} ADD COLUMN cancel_requested_at double precision",
            f"DROP INDEX {TABLE}_finished",
            f"CREATE INDEX {TABLE}_ended ON {TABLE} (updated_at) WHERE state IN ('delivered', 'dead', 'cancelled')",
        ),
    ),
    # Issue #22: who created a job (a keyed hash of its key), hand-backs of a model that could not take
    # it, the op token that makes a retried transition idempotent, and the audio as bytes in chunks of
    # a table of its own (results were base64 inside `result`: moved, the rest of `result` kept).
    (
        4,
        (
            f"ALTER TABLE {TABLE} ADD COLUMN owner text, ADD COLUMN handbacks integer NOT NULL DEFAULT 0, "
            "ADD COLUMN audio_bytes bigint, ADD COLUMN op_token text",
            f"CREATE TABLE {TABLE}_audio (job_id text NOT NULL REFERENCES {TABLE} (id) ON DELETE CASCADE, "
            "seq integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (job_id, seq))",
            # Encoded audio barely compresses: store it as is instead of trying pglz on every chunk.
            f"ALTER TABLE {TABLE}_audio ALTER COLUMN data SET STORAGE EXTERNAL",
            f"INSERT INTO {TABLE}_audio (job_id, seq, data) SELECT id, 0, decode(result::jsonb->>'audio', 'base64') "
            f"FROM {TABLE} WHERE result IS NOT NULL AND result::jsonb ? 'audio'",
            f"UPDATE {TABLE} SET audio_bytes = octet_length(decode(result::jsonb->>'audio', 'base64')), "
            "result = (result::jsonb - 'audio')::text WHERE result IS NOT NULL AND result::jsonb ? 'audio'",
            f"CREATE INDEX {TABLE}_unfinished_owner ON {TABLE} (owner) WHERE state IN ('queued', 'running')",
            f"CREATE TABLE {TABLE}_meta (name text PRIMARY KEY, value text NOT NULL)",
        ),
    ),
)


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations this database lacks, in one transaction under an advisory lock."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE}_migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        with conn.cursor(row_factory=tuple_row) as cursor:  # the pool's connections make dicts
            done = {row[0] for row in cursor.execute(f"SELECT version FROM {TABLE}_migrations").fetchall()}
        for version, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {TABLE}_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied
