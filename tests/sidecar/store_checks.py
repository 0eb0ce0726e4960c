"""Checks both job stores must pass, run by test_store.py (SQLite) and test_store_postgres.py (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from webhook_sidecar.jobs import Job, StaleJob, Store


def chunks(store: Store, job_id: str) -> tuple[int | None, int | None]:
    job = store.get(job_id)
    assert job is not None
    return job.chunks_done, job.chunks_total


def claim(store: Store, job_id: str) -> Job:
    job = store.claim_run()
    assert job is not None and job.id == job_id
    return job


def check_progress_follows_the_run(store: Store, add: Callable[[str], object]) -> None:
    """Progress is written only while a job runs; a finished run shows all chunks; a re-run starts afresh."""
    add("p1")
    with pytest.raises(StaleJob):
        store.note_progress("p1", 1, 10)  # queued: no run to report on
    claim(store, "p1")
    store.note_progress("p1", 3, 10)
    job = store.get("p1")
    assert job is not None and (job.chunks_done, job.chunks_total) == (3, 10)
    assert job.state == "running" and job.in_flight, "progress leaves the run as it was"

    store.requeue("p1", error="interrupted")
    with pytest.raises(StaleJob):
        store.note_progress("p1", 4, 10)
    assert chunks(store, "p1") == (3, 10)
    rerun = claim(store, "p1")
    assert (rerun.chunks_done, rerun.chunks_total) == (None, None), "a re-run reports afresh"
    assert chunks(store, "p1") == (None, None)

    store.note_progress("p1", 5, 10)
    store.finish("p1", "succeeded", {"audio": "AAAA"}, status_code=200, chunks=10)
    assert chunks(store, "p1") == (10, 10)
    with pytest.raises(StaleJob):
        store.note_progress("p1", 1, 10)  # a late poll after the call ended changes nothing
    assert chunks(store, "p1") == (10, 10)

    add("p2")
    claim(store, "p2")
    store.note_progress("p2", 2, 10)
    store.finish("p2", "failed", {"error": "x"}, error="x", status_code=500)
    assert chunks(store, "p2") == (2, 10), "a failed run keeps how far it got"
