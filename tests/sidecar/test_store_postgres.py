"""The PostgreSQL job store on a real server: migrations, SKIP LOCKED claims, leases, hand-back.

Several `PostgresJobStore`s on one database stand for several sidecars (each has its own lease owner).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.sidecar.store_checks import (
    check_a_handed_back_run_its_caller_cancelled_ends_cancelled,
    check_a_retried_write_finds_its_own_change,
    check_cancelling_follows_the_state,
    check_progress_follows_the_run,
    chunks,
    claim,
)
from webhook_sidecar.jobs import NEW_JOB_COLUMNS, STATES, NewJob
from webhook_sidecar.migrations import MIGRATIONS, TABLE, migrate
from webhook_sidecar.store import StaleJob
from webhook_sidecar.store_postgres import PostgresJobStore, redact

StoreFactory = Callable[..., PostgresJobStore]


@pytest.fixture
def make_store(pg_url: str) -> Iterator[StoreFactory]:
    stores: list[PostgresJobStore] = []

    def make(lease_s: float = 30.0) -> PostgresJobStore:
        store = PostgresJobStore(pg_url, lease_s=lease_s, pool_size=4)
        store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def add(store: PostgresJobStore, job_id: str, key: str | None = None) -> bool:
    return store.create(NewJob(job_id, {"prompt": job_id}, "http://127.0.0.1/hook", "http://sidecar", "hash", key))[1]


def finish_and_claim_delivery(store: PostgresJobStore, job_id: str) -> None:
    claimed = store.claim_run()
    assert claimed is not None and claimed.id == job_id
    store.finish(job_id, "succeeded", {"format": "wav"}, audio=b"AAAA", status_code=200)
    delivery = store.claim_delivery()
    assert delivery is not None and delivery.id == job_id


def database_at(pg_url: str, version: int, monkeypatch: pytest.MonkeyPatch, *updates: str) -> None:
    """A database as sidecars of `version` left it, holding one queued job "old" (then `updates`)."""
    new = NewJob("old", {"prompt": "old"}, "http://127.0.0.1/hook", "http://sidecar", "hash")
    values = list(new.insert_values(time.time()))
    del values[6]  # owner: a column of version 4
    columns = NEW_JOB_COLUMNS.replace(" owner,", "")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with monkeypatch.context() as patch:
            patch.setattr("webhook_sidecar.migrations.MIGRATIONS", MIGRATIONS[:version])
            assert migrate(conn) == list(range(1, version + 1))
        conn.execute(f"INSERT INTO {TABLE} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s)", values)
        for update in updates:
            conn.execute(update)


def test_migrations_are_idempotent_and_safe_when_sidecars_start_together(pg_url: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                results.append(migrate(conn))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    everything = [version for version, _ in MIGRATIONS]
    assert sorted(v for applied in results for v in applied) == everything, "each migration applied once"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrate(conn) == []
        rows = conn.execute(f"SELECT version FROM {TABLE}_migrations ORDER BY version").fetchall()
    assert [row[0] for row in rows] == everything


def test_a_job_goes_through_every_state_and_another_replica_reads_it(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    add(a, "j1")
    finish_and_claim_delivery(a, "j1")
    a.mark_delivered("j1", 204)
    job = b.get("j1", with_result=True)
    assert job is not None and job.state == "delivered" and job.last_status_code == 204
    assert job.result == {"format": "wav"} and job.audio_bytes == 4
    assert b.counts()["delivered"] == 1 and set(b.counts()) == set(STATES)


def test_skip_locked_claims_never_hand_one_job_to_two_sidecars(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(4)]
    for index in range(120):
        add(stores[0], f"j{index:03d}")
    claimed: list[str] = []
    lock = threading.Lock()

    def claim_all(store: PostgresJobStore) -> None:
        while (job := store.claim_run()) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(store,)) for store in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Counter(claimed) == Counter(f"j{index:03d}" for index in range(120))


def test_only_the_lease_holder_may_change_a_claimed_job(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    add(a, "j1")
    assert a.claim_run() is not None
    assert b.claim_run() is None
    with pytest.raises(StaleJob):
        b.finish("j1", "succeeded", {"audio": "AAAA"})
    with pytest.raises(StaleJob):
        b.requeue("j1")
    a.finish("j1", "succeeded", {"audio": "AAAA"})
    assert b.claim_delivery() is not None
    with pytest.raises(StaleJob):
        a.mark_delivered("j1", 200)


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_changes_nothing(make_store: StoreFactory) -> None:
    a, b = make_store(lease_s=1.0), make_store(lease_s=1.0)
    add(a, "run")
    add(a, "deliver")
    assert a.claim_run() is not None  # "run"
    finish_and_claim_delivery(a, "deliver")
    assert b.recover() == (0, 0), "a live lease is not taken over"
    time.sleep(1.3)
    assert b.recover() == (1, 1)
    run = b.get("run")
    assert run is not None and run.state == "queued" and run.attempts == 1 and "lease lapsed" in (run.last_error or "")
    with pytest.raises(StaleJob):
        a.finish("run", "succeeded", {"audio": "AAAA"})
    with pytest.raises(StaleJob):
        a.mark_delivered("deliver", 200)
    again = b.claim_delivery()
    assert again is not None and again.id == "deliver" and again.delivery_attempts == 2
    assert again.result == {"format": "wav"} and b"".join(b.read_audio("deliver")) == b"AAAA", (
        "delivered again, unchanged"
    )


def test_renewing_keeps_a_lease_alive(make_store: StoreFactory) -> None:
    a, b = make_store(lease_s=1.0), make_store(lease_s=1.0)
    add(a, "j1")
    assert a.claim_run() is not None
    for _ in range(3):
        time.sleep(0.5)
        assert a.renew(["j1", "not-held"]) == {"j1"}
        assert b.recover() == (0, 0)
    assert b.renew(["j1"]) == set(), "another sidecar's lease is not its to renew"


def test_release_all_hands_everything_back_at_once(make_store: StoreFactory) -> None:
    a, b = make_store(lease_s=60.0), make_store(lease_s=60.0)
    add(a, "run")
    add(a, "deliver")
    assert a.claim_run() is not None
    finish_and_claim_delivery(a, "deliver")
    assert b.claim_run() is None and b.claim_delivery() is None
    assert a.release_all() == (1, 1)
    run = b.claim_run()
    delivery = b.claim_delivery()
    assert run is not None and run.id == "run" and run.attempts == 0, "a handed-back run is not counted"
    assert delivery is not None and delivery.id == "deliver"


def test_an_idempotency_key_is_shared_by_every_replica_even_when_they_race(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    assert add(a, "first", key="k") is True
    job, created = b.create(NewJob("second", {"prompt": "other"}, "http://x/", "http://s", "h2", "k"))
    assert (job.id, created) == ("first", False)

    outcomes: list[tuple[str, bool]] = []
    barrier = threading.Barrier(6)

    def race(store: PostgresJobStore, job_id: str) -> None:
        barrier.wait()
        job, created = store.create(NewJob(job_id, {"prompt": "x"}, "http://x/", "http://s", "h", "raced"))
        outcomes.append((job.id, created))

    threads = [threading.Thread(target=race, args=(store, f"r{i}")) for i, store in enumerate([a, b] * 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(created for _, created in outcomes) == 1
    assert len({job_id for job_id, _ in outcomes}) == 1


def test_download_audio_is_kept_until_the_link_expires(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    add(a, "j1")
    assert a.claim_run() is not None
    a.finish("j1", "succeeded", {"format": "wav"}, audio=b"RIFF", download_token="tok", download_ttl_s=0.2)
    assert b.get_by_download_token("tok").audio_bytes == 4  # type: ignore[union-attr]
    delivery = b.claim_delivery()
    assert delivery is not None
    b.mark_delivered("j1", 200)
    assert b.purge(retention_s=3600) == 0
    assert list(a.read_audio("j1")) == [b"RIFF"], "kept while the link lives"
    time.sleep(0.3)
    assert b.purge(retention_s=3600) == 0
    assert list(a.read_audio("j1")) == []


def test_progress_follows_the_run(make_store: StoreFactory) -> None:
    store = make_store()
    check_progress_follows_the_run(store, lambda job_id: add(store, job_id))


def test_progress_is_written_only_under_this_sidecars_lease_and_keeps_it(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    add(a, "j1")
    claim(a, "j1")
    with pytest.raises(StaleJob):
        b.note_progress("j1", 9, 10)
    a.note_progress("j1", 3, 10)
    assert chunks(b, "j1") == (3, 10)
    assert a.renew(["j1"]) == {"j1"}, "the lease is still held and the job still in flight"
    a.finish("j1", "succeeded", {"audio": "AAAA"}, chunks=10)
    assert chunks(b, "j1") == (10, 10)


def test_a_database_from_before_progress_is_migrated_and_keeps_its_jobs(
    pg_url: str, make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_at(pg_url, 1, monkeypatch)
    store = make_store()  # opening migrates to the latest version
    job = store.get("old")
    assert job is not None and job.state == "queued" and (job.chunks_done, job.chunks_total) == (None, None)
    claim(store, "old")
    store.note_progress("old", 1, 3)
    assert chunks(store, "old") == (1, 3)


def test_logs_never_show_the_password() -> None:
    assert redact("postgresql://jobs:s3cret@db.example:5432/jobs") == "postgresql://jobs@db.example:5432/jobs"


def test_cancelling_follows_the_state(make_store: StoreFactory) -> None:
    store = make_store()
    check_cancelling_follows_the_state(store, lambda job_id: add(store, job_id), lambda: time.sleep(0.01))


def test_a_run_its_caller_cancelled_ends_cancelled_when_handed_back_at_shutdown(make_store: StoreFactory) -> None:
    store = make_store()
    check_a_handed_back_run_its_caller_cancelled_ends_cancelled(
        store, lambda job_id: add(store, job_id), store.release_all
    )


def test_a_lapsed_run_its_caller_cancelled_from_another_replica_ends_cancelled(make_store: StoreFactory) -> None:
    a, b = make_store(lease_s=0.2), make_store(lease_s=0.2)
    add(a, "j1")
    claim(a, "j1")
    marked = b.cancel("j1")
    assert marked is not None and marked.state == "running" and marked.cancel_requested_at is not None
    assert a.cancel_requested("j1"), "the replica running it sees the request"
    time.sleep(0.3)  # a dies: its lease lapses
    assert b.recover() == (1, 0)
    job = b.get("j1")
    assert job is not None and job.state == "cancelled" and job.attempts == 0 and not job.in_flight
    assert b.claim_run() is None
    with pytest.raises(StaleJob):
        a.mark_cancelled("j1")


def test_a_database_from_before_cancelling_is_migrated_and_keeps_its_jobs(
    pg_url: str, make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_at(pg_url, 2, monkeypatch)
    store = make_store()  # opening applies version 3
    job = store.get("old")
    assert job is not None and job.state == "queued" and job.cancel_requested_at is None
    cancelled = store.cancel("old")
    assert cancelled is not None and cancelled.state == "cancelled"
    time.sleep(0.01)
    assert store.purge(retention_s=0) == 1


def test_a_retried_write_finds_its_own_change(make_store: StoreFactory) -> None:
    store = make_store()
    check_a_retried_write_finds_its_own_change(store, lambda job_id: add(store, job_id))


def test_a_database_with_base64_results_keeps_them_as_audio_bytes(
    pg_url: str, make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = json.dumps({"audio": base64.b64encode(b"RIFF-old").decode(), "format": "wav"})
    database_at(
        pg_url, 3, monkeypatch, f"UPDATE {TABLE} SET state = 'succeeded', outcome = 'succeeded', result = '{result}'"
    )
    store = make_store()  # opening applies version 4
    job = store.claim_delivery()
    assert job is not None and job.result == {"format": "wav"} and job.audio_bytes == 8 and job.owner is None
    assert b"".join(store.read_audio("old")) == b"RIFF-old"
