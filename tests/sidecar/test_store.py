"""The job store: transitions guarded by state, recovery after a crash, idempotency, retention."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecar.store_checks import (
    check_a_handed_back_run_its_caller_cancelled_ends_cancelled,
    check_a_retried_write_finds_its_own_change,
    check_cancelling_follows_the_state,
    check_progress_follows_the_run,
    claim,
)
from webhook_sidecar.jobs import NewJob
from webhook_sidecar.store import STATES, JobStore, StaleJob, StoreLocked


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[JobStore]:
    store = JobStore(tmp_path / "sub" / "jobs.sqlite3", clock=clock)
    store.open()
    yield store
    store.close()


def add(store: JobStore, job_id: str = "j1", key: str | None = None) -> None:
    store.create(NewJob(job_id, {"prompt": "hi"}, "http://127.0.0.1/hook", "http://sidecar", "hash", key))


def test_the_store_uses_wal_and_creates_its_folder(store: JobStore) -> None:
    assert store.path.exists()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_job_goes_through_every_state_to_delivered(store: JobStore) -> None:
    add(store)
    assert store.get("j1").state == "queued"  # type: ignore[union-attr]
    claimed = store.claim_run()
    assert claimed is not None and claimed.id == "j1" and claimed.state == "running"
    assert store.claim_run() is None, "a running job is not claimed twice"
    audio = bytes(range(256)) * 9000  # over two of the store's chunks
    store.finish("j1", "succeeded", {"format": "wav"}, audio=audio, status_code=200, counted=True)
    delivery = store.claim_delivery()
    assert delivery is not None and delivery.result == {"format": "wav"} and delivery.delivery_attempts == 1
    assert delivery.audio_bytes == len(audio) and delivery.attempts == 1, "the result and its attempt together"
    assert [len(piece) for piece in store.read_audio("j1")] == [1024 * 1024, 1024 * 1024, len(audio) - 2 * 1024 * 1024]
    assert b"".join(store.read_audio("j1")) == audio
    assert store.claim_delivery() is None, "a delivery in flight is not claimed twice"
    store.mark_delivered("j1", 204)
    job = store.get("j1", with_result=True)
    assert job is not None and job.state == "delivered" and job.last_status_code == 204
    assert job.result == {"format": "wav"}, "the prediction but its audio stays with the job"
    store.purge(retention_s=3600)
    assert list(store.read_audio("j1")) == [], "delivered audio is not kept without a download link"


def test_transitions_from_the_wrong_state_change_nothing(store: JobStore) -> None:
    add(store)
    with pytest.raises(StaleJob):
        store.finish("j1", "succeeded", {})
    with pytest.raises(StaleJob):
        store.mark_delivered("j1", 200)
    assert store.get("j1").state == "queued"  # type: ignore[union-attr]


def test_retries_wait_for_their_time(store: JobStore, clock: Clock) -> None:
    add(store)
    store.claim_run()
    store.finish("j1", "failed", {"error": "x"}, error="x", status_code=400)
    store.claim_delivery()
    store.schedule_retry("j1", 5.0, "webhook answered 500", 500)
    assert store.claim_delivery() is None
    assert store.next_delivery_due() == clock.now + 5.0
    clock.now += 5.0
    again = store.claim_delivery()
    assert again is not None and again.delivery_attempts == 2 and again.last_error == "webhook answered 500"


def test_recover_requeues_running_jobs_and_makes_interrupted_deliveries_due(store: JobStore, clock: Clock) -> None:
    for job_id in ("run", "deliver", "waiting"):
        add(store, job_id)
    store.claim_run()  # "run"
    store.claim_run()  # "deliver"
    store.claim_run()  # "waiting"
    for job_id in ("deliver", "waiting"):
        store.finish(job_id, "succeeded", {"audio": "AAAA"})
    store.claim_delivery()
    store.claim_delivery()
    store.schedule_retry("waiting", 60.0, "receiver down", None)
    clock.now += 1
    assert store.recover() == (1, 1)
    run = store.get("run")
    assert run is not None and run.state == "queued" and run.attempts == 1, "the cut-short call counts"
    deliver = store.get("deliver")
    assert deliver is not None and deliver.state == "delivering" and not deliver.in_flight
    assert deliver.next_attempt_at == clock.now
    assert store.get("waiting").next_attempt_at == clock.now + 59  # type: ignore[union-attr]


def test_the_same_idempotency_key_returns_the_first_job(store: JobStore) -> None:
    add(store, "first", key="k")
    job, created = store.create(NewJob("second", {"prompt": "other"}, "http://x/", "http://s", "h2", "k"))
    assert (job.id, created) == ("first", False)
    assert store.get("second") is None


def test_counts_cover_every_state(store: JobStore) -> None:
    add(store, "a")
    add(store, "b")
    store.claim_run()
    counts = store.counts()
    assert counts["queued"] == 1 and counts["running"] == 1 and counts["dead"] == 0 and set(counts) == set(STATES)


def test_download_audio_is_kept_until_the_link_expires_then_jobs_are_purged(store: JobStore, clock: Clock) -> None:
    add(store)
    store.claim_run()
    store.finish("j1", "succeeded", {"format": "wav"}, audio=b"RIFF", download_token="tok", download_ttl_s=100)
    store.claim_delivery()
    store.mark_delivered("j1", 200)
    assert store.purge(retention_s=1000) == 0
    assert store.get_by_download_token("tok").audio_bytes == 4  # type: ignore[union-attr]
    assert list(store.read_audio("j1")) == [b"RIFF"]
    clock.now += 101
    assert store.purge(retention_s=1000) == 0
    assert list(store.read_audio("j1")) == [], "the link expired: its audio is gone"
    clock.now += 1000
    assert store.purge(retention_s=1000) == 1
    assert store.get("j1") is None


def test_progress_follows_the_run(store: JobStore) -> None:
    check_progress_follows_the_run(store, lambda job_id: add(store, job_id))


def test_a_file_from_before_progress_gains_its_columns_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = JobStore(path)
    old.open()
    add(old, "old")
    old.close()
    with sqlite3.connect(path) as db:  # the previous release's table: no progress columns
        db.execute("ALTER TABLE jobs DROP COLUMN chunks_done")
        db.execute("ALTER TABLE jobs DROP COLUMN chunks_total")
    store = JobStore(path)
    store.open()
    try:
        job = store.get("old")
        assert job is not None and job.state == "queued" and job.chunks_done is None
        claim(store, "old")
        store.note_progress("old", 1, 2)
        assert store.get("old").chunks_done == 1  # type: ignore[union-attr]
    finally:
        store.close()
    reopened = JobStore(path)
    reopened.open()  # columns present: nothing to add
    assert reopened.get("old").chunks_total == 2  # type: ignore[union-attr]
    reopened.close()


def test_cancelling_follows_the_state(store: JobStore, clock: Clock) -> None:
    def wait() -> None:
        clock.now += 1

    check_cancelling_follows_the_state(store, lambda job_id: add(store, job_id), wait)


def test_a_run_its_caller_cancelled_ends_cancelled_at_restart_and_shutdown(store: JobStore) -> None:
    check_a_handed_back_run_its_caller_cancelled_ends_cancelled(store, lambda job_id: add(store, job_id), store.recover)


def test_a_file_from_before_cancelling_gains_its_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = JobStore(path)
    old.open()
    add(old, "old")
    old.close()
    with sqlite3.connect(path) as db:  # the previous release's table: no cancel column
        db.execute("ALTER TABLE jobs DROP COLUMN cancel_requested_at")
    store = JobStore(path)
    store.open()
    try:
        job = store.get("old")
        assert job is not None and job.state == "queued" and job.cancel_requested_at is None
        cancelled = store.cancel("old")
        assert cancelled is not None and cancelled.state == "cancelled"
    finally:
        store.close()


def test_a_retried_write_finds_its_own_change(store: JobStore) -> None:
    check_a_retried_write_finds_its_own_change(store, lambda job_id: add(store, job_id))


def test_a_second_store_on_the_file_is_refused_until_the_first_closes(store: JobStore) -> None:
    second = JobStore(store.path)
    with pytest.raises(StoreLocked, match=r"is in use by pid \d+ on .*: a SQLite job store belongs to one sidecar"):
        second.open()
    store.close()
    second.open()
    second.close()


def test_a_file_with_base64_results_keeps_them_as_audio_bytes(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the columns of a file from before #22, with a delivered-to-be result
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, request_hash TEXT NOT NULL, "
            "model_input TEXT NOT NULL, webhook_endpoint TEXT NOT NULL, public_base TEXT NOT NULL, "
            "state TEXT NOT NULL, outcome TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
            "delivery_attempts INTEGER NOT NULL DEFAULT 0, in_flight INTEGER NOT NULL DEFAULT 0, "
            "created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, "
            "finished_at REAL, delivered_at REAL, next_attempt_at REAL NOT NULL, last_error TEXT, "
            "last_status_code INTEGER, result TEXT, download_token TEXT UNIQUE, download_expires_at REAL)"
        )
        db.execute(
            "INSERT INTO jobs (id, request_hash, model_input, webhook_endpoint, public_base, state, outcome, "
            "created_at, updated_at, next_attempt_at, result) VALUES ('old', 'h', '{}', 'http://x/', 'http://s', "
            "'succeeded', 'succeeded', 1, 1, 1, ?)",
            (json.dumps({"audio": base64.b64encode(b"RIFF-old").decode(), "format": "wav"}),),
        )
    store = JobStore(path)
    store.open()
    try:
        job = store.claim_delivery()
        assert job is not None and job.result == {"format": "wav"} and job.audio_bytes == 8
        assert b"".join(store.read_audio("old")) == b"RIFF-old"
    finally:
        store.close()
