"""The shared store failing under real sidecars: PostgreSQL killed (`pg_ctl stop -m immediate`) and started
again during model calls, at `finish` and during deliveries; down for longer than a lease; a pod whose
model server is down.

Two `python -m webhook_sidecar` processes share a PostgreSQL server of this module's own (stopping it
must not disturb other tests). What must hold whatever the timing: every job ends `delivered`, under one
webhook id with one body however often it was sent; nothing stays `running` or `delivering` longer than
a lease plus a minute after the database is back; and the fake model never sees one job called twice
at the same time. Waits poll for states with generous deadlines (a loaded 2-core machine is slow).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.serving import free_port
from tests.sidecar.harness import (
    FakeModel,
    Receiver,
    SidecarProcess,
    ThreadedUvicorn,
    job_body,
    process_env,
    sidecar_processes,
    submit,
    wait_for,
)
from tests.sidecar.postgres import PostgresServer, postgres_server
from tests.sidecar.test_shared_store import assert_one_message_per_job

#: Longer than a restart of the database on a loaded machine (a short outage costs no lease) ...
LEASE_S = 6.0
#: ... and shorter where the database stays down past it.
SHORT_LEASE_S = 2.0
#: "Back to normal" deadline after the database returns: a lease plus a minute (the issue's bound).
SETTLED_S = LEASE_S + 60


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """Durable (fsync, synchronous commit): an immediate stop keeps every commit, as a real server does."""
    with postgres_server(durable=True) as server:
        yield server


@pytest.fixture
def database(own_postgres: PostgresServer) -> Iterator[PostgresServer]:
    yield own_postgres
    try:  # a failed test must not leave the module's server down
        psycopg.connect(own_postgres.admin_url, connect_timeout=2).close()
    except psycopg.OperationalError:
        own_postgres.start()


@pytest.fixture
def start_sidecar(
    tmp_path: Path, fake_model: FakeModel, database: PostgresServer
) -> Iterator[Callable[..., SidecarProcess]]:
    pg_url = database.new_database()
    env = process_env(
        fake_model.predict_url,
        SIDECAR_DATABASE_URL=pg_url,
        SIDECAR_LEASE_S=str(LEASE_S),
        SIDECAR_DB_WAIT_S="0.5",
        SIDECAR_RETRY_MAX_S="0.5",
        SIDECAR_CONCURRENCY="3",
        SIDECAR_DELIVERY_CONCURRENCY="3",
    )
    with sidecar_processes(tmp_path, env) as start:

        def started(name: str, **overrides: str) -> SidecarProcess:
            process = start(name, **overrides)
            process.pg_url = pg_url  # type: ignore[attr-defined]
            return process

        yield started


def states(pg_url: str) -> dict[str, str]:
    with psycopg.connect(pg_url, connect_timeout=5) as conn:
        return dict(conn.execute("SELECT id, state FROM bark_jobs").fetchall())


def all_delivered(pg_url: str, count: int) -> bool:
    try:
        found = states(pg_url)
    except psycopg.OperationalError:
        return False
    return len(found) == count and set(found.values()) == {"delivered"}


def submit_jobs(sidecars: list[SidecarProcess], receiver: Receiver, count: int, tag: str) -> dict[str, str]:
    prompts = {}
    for index in range(count):
        prompt = f"{tag} {index}."
        prompts[submit(sidecars[index % len(sidecars)].url, job_body(receiver, prompt))] = prompt
    return prompts


def settle(pg_url: str, prompts: dict[str, str], receiver: Receiver, fake_model: FakeModel) -> None:
    """Everything delivered within a lease and a minute; one message per job; no job run twice at once."""
    try:
        wait_for(lambda: all_delivered(pg_url, len(prompts)), SETTLED_S, "every job delivered after the outage")
    except AssertionError as error:
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(
                "SELECT id, state, in_flight, lease_owner, lease_expires_at, attempts, handbacks, last_error "
                "FROM bark_jobs"
            ).fetchall()
        raise AssertionError(f"{error}; jobs: {rows}") from None
    assert_one_message_per_job(receiver, prompts)
    assert fake_model.overlaps == [], "no job ran on two sidecars at the same time"


@pytest.mark.parametrize("moment", ["model call", "finish", "delivery"])
def test_a_database_restart_loses_no_job_runs_none_twice_at_once_and_strands_nothing(
    moment: str,
    start_sidecar: Callable[..., SidecarProcess],
    database: PostgresServer,
    fake_model: FakeModel,
    receiver: Receiver,
) -> None:
    sidecars = [start_sidecar("a"), start_sidecar("b")]
    pg_url = sidecars[0].pg_url  # type: ignore[attr-defined]
    if moment == "delivery":
        receiver.gate.clear()  # results reach the receiver, which holds them open
        prompts = submit_jobs(sidecars, receiver, 4, "Held delivery")
        wait_for(lambda: receiver.held == 4, 30, "four deliveries held at the receiver")
    else:
        fake_model.gate.clear()  # jobs reach the model, which holds them open
        prompts = submit_jobs(sidecars, receiver, 4, f"Held at the {moment}")
        wait_for(lambda: fake_model.in_flight == 4, 30, "four model calls in flight")

    database.stop()
    if moment == "finish":
        fake_model.gate.set()  # the calls end while the database is down: `finish` cannot land yet
        wait_for(lambda: fake_model.in_flight == 0, 30, "the model calls to end")
    elif moment == "delivery":
        receiver.gate.set()  # acknowledged while `mark_delivered` cannot land
        wait_for(lambda: receiver.held == 0, 30, "the held deliveries to be answered")
    time.sleep(LEASE_S / 2)  # a short outage: shorter than a lease
    database.start()
    fake_model.gate.set()
    receiver.gate.set()

    settle(pg_url, prompts, receiver, fake_model)
    if moment != "delivery":
        answered = [prompt for prompt in fake_model.prompts if prompt in prompts.values()]
        assert sorted(set(answered)) == sorted(prompts.values())


def test_a_database_down_past_the_lease_stops_the_model_call_and_the_job_then_runs_once(
    start_sidecar: Callable[..., SidecarProcess],
    database: PostgresServer,
    fake_model: FakeModel,
    receiver: Receiver,
) -> None:
    first = start_sidecar("a", SIDECAR_LEASE_S=str(SHORT_LEASE_S))
    pg_url = first.pg_url  # type: ignore[attr-defined]
    fake_model.gate.clear()
    prompts = submit_jobs([first], receiver, 1, "Outlives its lease")
    (job_id,) = prompts
    wait_for(lambda: fake_model.in_flight == 1, 30, "the model call in flight")
    second = start_sidecar("b", SIDECAR_LEASE_S=str(SHORT_LEASE_S))

    database.stop()
    try:
        # No renewal can land: the first sidecar stops its call before the lease could pass to another.
        wait_for(lambda: fake_model.disconnects == [job_id], SHORT_LEASE_S * 4, "the first sidecar to abort its call")
    finally:
        database.start()
    assert "no lease renewal for a whole lease" in first.log()
    fake_model.gate.set()

    settle(pg_url, prompts, receiver, fake_model)
    runs = fake_model.prompts.count(prompts[job_id])
    assert runs == 2, "the aborted call and one complete run"
    assert first.process is not None and first.process.poll() is None
    assert second.process is not None and second.process.poll() is None


def test_a_sidecar_whose_model_is_down_claims_nothing_and_the_healthy_one_runs_everything(
    start_sidecar: Callable[..., SidecarProcess], fake_model: FakeModel, receiver: Receiver
) -> None:
    loading = FakeModel(ready_status=503)  # listening, answering 503 (KServe while the model loads)
    loading_server = ThreadedUvicorn(loading.app())
    loading.url = loading_server.url
    loading_server.start()
    try:
        nothing_listening = f"http://127.0.0.1:{free_port()}/v1/models/bark:predict"
        down = start_sidecar("down", SIDECAR_MODEL_URL=nothing_listening)
        busy = start_sidecar("loading", SIDECAR_MODEL_URL=loading.predict_url)
        healthy = start_sidecar("healthy")
        pg_url = healthy.pg_url  # type: ignore[attr-defined]
        prompts = submit_jobs([down, busy, down, busy, healthy, down], receiver, 6, "Needs a model")
        settle(pg_url, prompts, receiver, fake_model)
    finally:
        loading_server.stop()
    assert loading.prompts == []
    assert sorted(fake_model.prompts) == sorted(prompts.values()), "each job ran once, on the healthy pod"
    for sidecar in (down, busy):
        assert claims(sidecar) == 0, sidecar.log()[-2000:]
    assert claims(healthy) == 6
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT max(attempts), max(handbacks) FROM bark_jobs").fetchone() == (1, 0)


def claims(sidecar: SidecarProcess) -> int:
    """Runs this sidecar claimed (its `bark_job_transitions_total{state="running"}`)."""
    text = httpx.get(f"{sidecar.url}/metrics", timeout=10).text
    found = re.search(r'^bark_job_transitions_total\{state="running"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0
