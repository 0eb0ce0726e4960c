"""The KEDA PostgreSQL trigger's query, run on a real PostgreSQL holding the sidecars' job store.

The jobs are moved through their states by the store itself (webhook_sidecar/store_postgres.py), as
the sidecars would, and after each step the chart's query must say how much work waits for a pod.
KEDA reads one number from one row (`QueryRow(...).Scan(&float64)`); above
activationTargetQueryValue ("0") it wakes a pod from zero; with jobsPerPod (targetQueryValue) its
HPA wants value / jobsPerPod pods, rounded up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from deploy_helpers import Helm, only

from tests.sidecar.postgres import PostgresServer, postgres_server
from webhook_sidecar.jobs import NewJob
from webhook_sidecar.store_postgres import PostgresJobStore


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


@pytest.fixture
def store(server: PostgresServer) -> Iterator[PostgresJobStore]:
    """The sidecars' store (schema migrated by `open`, as a starting sidecar does) on a new database."""
    store = PostgresJobStore(server.new_database(), lease_s=60)
    store.open()
    yield store
    store.close()


@pytest.fixture(scope="module")
def job_trigger(helm: Helm) -> dict[str, Any]:
    objects = helm.render("-f", "charts/bark-tts/ci/keda-values.yaml")
    (trigger,) = [t for t in only(objects, "ScaledObject")["spec"]["triggers"] if t["type"] == "postgresql"]
    return dict(trigger["metadata"])


def keda_reads(store: PostgresJobStore, query: str) -> float:
    """What KEDA's scaler reads: the single value of the single row."""
    with psycopg.connect(store.url, autocommit=True) as conn:
        rows = conn.execute(query).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return float(rows[0][0])


def submit(store: PostgresJobStore, count: int) -> list[str]:
    ids = [f"job-{index}-{id(store)}" for index in range(count)]
    for job_id in ids:
        store.create(NewJob(job_id, {"prompt": "Hello."}, "https://hooks.example.com/x", "https://jobs.example", "h"))
    return ids


def run_to_result(store: PostgresJobStore) -> str:
    job = store.claim_run()
    assert job is not None
    store.finish(job.id, "succeeded", {"audio": "UklGRg=="})
    return job.id


def deliver_all(store: PostgresJobStore) -> None:
    while (job := store.claim_delivery()) is not None:
        store.mark_delivered(job.id, 200)


def test_the_query_counts_work_for_the_model_and_keeps_a_pod_for_undelivered_results(
    store: PostgresJobStore, job_trigger: dict[str, Any]
) -> None:
    query = job_trigger["query"]
    assert keda_reads(store, query) == 0  # an empty store: nothing wakes a pod
    submit(store, 3)
    assert keda_reads(store, query) == 3  # three queued
    running = store.claim_run()
    assert running is not None
    assert keda_reads(store, query) == 3  # two queued + one running: still three for the model
    store.finish(running.id, "succeeded", {"audio": "UklGRg=="})
    assert keda_reads(store, query) == 2  # the finished one only needs delivering
    run_to_result(store)
    run_to_result(store)
    # No work for the model, but three results to deliver: one pod (a sidecar delivers them).
    assert keda_reads(store, query) == 1
    deliver_all(store)
    assert keda_reads(store, query) == 0  # all delivered: the last pod may go


def test_jobs_that_ended_any_way_wake_nothing(store: PostgresJobStore, job_trigger: dict[str, Any]) -> None:
    cancelled, dead = submit(store, 2)
    assert store.cancel(cancelled) is not None
    store.claim_run()
    store.finish(dead, "failed", {"error": "bad input"}, error="bad input", status_code=400)
    delivery = store.claim_delivery()
    assert delivery is not None and delivery.id == dead
    store.mark_dead(dead, "webhook rejected", 410)
    assert keda_reads(store, job_trigger["query"]) == 0


def test_a_lost_pods_job_and_a_job_waiting_to_retry_wake_a_pod(
    store: PostgresJobStore, server: PostgresServer, job_trigger: dict[str, Any]
) -> None:
    """The jobs a scale to zero could strand: still `running` under a dead pod's lease (only a live
    sidecar's `recover` hands it back), or queued with its next attempt due later."""
    lost, retried = submit(store, 2)
    assert [store.claim_run(), store.claim_run()] != [None, None]
    assert store.get(lost).state == "running"  # type: ignore[union-attr]  # and its pod dies without a word
    store.requeue(retried, error="model answered 503", delay_s=120)
    assert keda_reads(store, job_trigger["query"]) == 2
    assert float(job_trigger["activationTargetQueryValue"]) < 1  # either one alone wakes a pod
