"""Checks both job stores must pass, run by test_store.py (SQLite) and test_store_postgres.py (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from webhook_sidecar.jobs import Job, StaleJob
from webhook_sidecar.store_base import Store


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


def state(store: Store, job_id: str) -> str | None:
    job = store.get(job_id)
    return job.state if job is not None else None


def check_cancelling_follows_the_state(store: Store, add: Callable[[str], object], wait: Callable[[], None]) -> None:
    """Queued: cancelled at once and never claimed; running: marked, then cancelled by its runner;
    finished: left alone; unknown: None. A cancelled job is purged after retention like a delivered one.
    `wait()` lets the store's clock move on."""
    add("queued")
    job = store.cancel("queued")
    assert job is not None and job.state == "cancelled" and job.cancel_requested_at is not None
    assert not job.in_flight and job.finished_at is not None
    assert store.claim_run() is None, "a cancelled job never runs"
    again = store.cancel("queued")
    assert again is not None and again.state == "cancelled", "cancelling twice is the same"
    assert again.cancel_requested_at == job.cancel_requested_at

    add("running")
    claim(store, "running")
    assert store.cancel_requested("running") is False
    marked = store.cancel("running")
    assert marked is not None and marked.state == "running" and marked.cancel_requested_at is not None
    assert store.cancel("running") == marked, "a second request changes nothing"
    assert store.cancel_requested("running") is True
    store.mark_cancelled("running")
    ended = store.get("running")
    assert ended is not None and ended.state == "cancelled" and ended.attempts == 0 and not ended.in_flight
    assert store.claim_delivery() is None, "a cancelled job is never delivered"

    add("done")
    claim(store, "done")
    store.finish("done", "succeeded", {"audio": "AAAA"}, status_code=200)
    finished = store.cancel("done")
    assert finished is not None and finished.state == "succeeded" and finished.cancel_requested_at is None
    assert store.cancel("nope") is None
    assert store.counts()["cancelled"] == 2

    wait()
    assert store.purge(retention_s=3600) == 0, "kept until retention"
    store.purge(retention_s=0)
    assert state(store, "queued") is None and state(store, "running") is None, "cancelled jobs are purged"
    assert state(store, "done") == "succeeded", "a job still to deliver is kept"


def check_a_handed_back_run_its_caller_cancelled_ends_cancelled(
    store: Store, add: Callable[[str], object], hand_back: Callable[[], tuple[int, int]]
) -> None:
    """Restart, shutdown or a lapsed lease: a cancel-requested run ends `cancelled`, the others are queued
    again; neither counts the cut-short call against a cancelled job. `requeue` honours it too."""
    add("asked")
    add("plain")
    claim(store, "asked")
    claim(store, "plain")
    store.cancel("asked")
    assert hand_back() == (2, 0)
    asked, plain = store.get("asked"), store.get("plain")
    assert asked is not None and asked.state == "cancelled" and asked.attempts == 0 and not asked.in_flight
    assert asked.last_error is None
    assert plain is not None and plain.state == "queued" and plain.cancel_requested_at is None

    claim(store, "plain")
    store.cancel("plain")
    store.requeue("plain", error="interrupted")
    requeued = store.get("plain")
    assert requeued is not None and requeued.state == "cancelled", "a shutdown hand-back honours the cancel"
    with pytest.raises(StaleJob):
        store.mark_cancelled("plain")


def check_a_retried_write_finds_its_own_change(store: Store, add: Callable[[str], object]) -> None:
    """A write retried with its `op` after a lost reply (the change landed, the answer did not) succeeds
    and changes nothing twice; the same write with another op is refused as usual."""
    add("r1")
    job = store.claim_run(op="claim-1")
    assert job is not None and job.id == "r1"
    again = store.claim_run(op="claim-1")
    assert again is not None and again.id == "r1", "a retried claim returns the job its first try took"
    assert store.count_attempt("r1", 1, op="count-1") == 1
    assert store.count_attempt("r1", 1, op="count-1") == 1, "one op counts once"
    assert store.count_attempt("r1", 1) == 2
    store.finish("r1", "succeeded", {"format": "wav"}, audio=b"RIFF", op="finish-1")
    store.finish("r1", "succeeded", {"format": "wav"}, audio=b"RIFF", op="finish-1")
    with pytest.raises(StaleJob):
        store.finish("r1", "succeeded", {"format": "wav"}, audio=b"RIFF", op="finish-2")
    delivery = store.claim_delivery(op="deliver-1")
    redelivery = store.claim_delivery(op="deliver-1")
    assert delivery is not None and redelivery is not None and redelivery.id == "r1"
    assert redelivery.delivery_attempts == 1, "the retried claim counted no second attempt"
    store.mark_delivered("r1", 200, op="done-1")
    store.mark_delivered("r1", 200, op="done-1")
    with pytest.raises(StaleJob):
        store.count_attempt("r1", 1)  # a finished run is no one's to count
    assert store.counts()["delivered"] == 1
