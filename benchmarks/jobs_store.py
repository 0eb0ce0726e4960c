"""The async job path on both stores: jobs accepted per second, claim latency, end-to-end throughput.

Two layers, each on SQLite (one file, one sidecar) and on PostgreSQL (shared by sidecars):
  store   `create` from several threads (jobs accepted per second by the store alone), then
          `claim_run` latency (p50/p99) with several claimers racing, as the run loops of a few
          sidecars do (SQLite: one process's threads; PostgreSQL: one store object per "sidecar").
  http    real `python -m webhook_sidecar` processes (1 on SQLite; 1 and 2 on PostgreSQL) behind a
          stub model that answers at once, and a receiver that acknowledges at once:
          `POST /async_predict` per second with concurrent clients, and jobs delivered per second.
  memory  one sidecar process per job length (SQLite) behind a stub model answering 1 or 10 minutes of
          24 kHz WAV: the sidecar's peak RSS (VmHWM) idle, and after the job is delivered (a download
          link) and its audio downloaded; the ratio to idle (issue 22: results are stored as bytes).
No `--postgres-url`: a throwaway PostgreSQL server is started for the run (tests/sidecar/postgres.py)
with its default durability (fsync on), as SQLite runs with synchronous=FULL. SQLite is measured as
the sidecar uses it: one store (one connection) shared by the process's threads.

Usage:
  python benchmarks/jobs_store.py                     # both layers, both stores
  python benchmarks/jobs_store.py --jobs 2000 --clients 16
  python benchmarks/jobs_store.py --postgres-url postgresql://user:pass@host/db
  python benchmarks/jobs_store.py --layers memory      # only the sidecar's RSS for long jobs
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.sidecar.harness import SECRET, FakeModel, Receiver, SidecarProcess, ThreadedUvicorn, wait_for  # noqa: E402
from webhook_sidecar.jobs import NewJob  # noqa: E402
from webhook_sidecar.store import JobStore  # noqa: E402
from webhook_sidecar.store_base import Store  # noqa: E402
from webhook_sidecar.store_postgres import PostgresJobStore  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_threads(count: int, work: Callable[[int], None]) -> float:
    """Run `work(index)` in `count` threads at once; seconds until all are done."""
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def bench_store(make: Callable[[], Store], jobs: int, writers: int, claimers: int) -> dict[str, Any]:
    """Accepted jobs/s from `writers` threads, then claim latency with `claimers` racing claimers.

    A shared store gets one store object per claimer (one per sidecar); SQLite one for all.
    """
    first = make()
    stores = [first, *(make() for _ in range(claimers - 1))] if first.shared else [first] * claimers
    for store in set(stores):
        store.open()
    per_writer = jobs // writers

    def write(index: int) -> None:
        store = stores[index % len(stores)]
        for n in range(per_writer):
            job_id = f"w{index}-{n}"
            store.create(NewJob(job_id, {"prompt": job_id}, "http://127.0.0.1/hook", "http://sidecar", "hash", job_id))

    create_s = run_threads(writers, write)
    latencies: list[float] = []
    lock = threading.Lock()

    def claim(index: int) -> None:
        store = stores[index]
        mine: list[float] = []
        while True:
            started = time.perf_counter()
            job = store.claim_run()
            mine.append(time.perf_counter() - started)
            if job is None:
                break
        with lock:
            latencies.extend(mine)

    claim_s = run_threads(claimers, claim)
    for store in set(stores):
        store.close()
    total = per_writer * writers
    return {
        "jobs": total,
        "accepted_per_s": round(total / create_s, 1),
        "claims_per_s": round(total / claim_s, 1),
        "claim_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "claim_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "claimers": claimers,
    }


@contextmanager
def stub_model_and_receiver() -> Iterator[tuple[FakeModel, Receiver]]:
    model = FakeModel()
    runner = ThreadedUvicorn(model.app())
    model.url = runner.url
    runner.start()
    receiver = Receiver()
    receiver.up()
    try:
        yield model, receiver
    finally:
        receiver.down()
        runner.stop()


def bench_http(env: dict[str, str], sidecars: int, jobs: int, clients: int, folder: Path) -> dict[str, Any]:
    """Accepted and delivered jobs/s through `sidecars` real sidecar processes on one store."""
    with ExitStack() as stack, stub_model_and_receiver() as (model, receiver):
        processes = []
        for index in range(sidecars):
            process = SidecarProcess(
                {
                    "SIDECAR_MODEL_URL": model.predict_url,
                    "SIDECAR_WEBHOOK_SECRET": SECRET,
                    "SIDECAR_WEBHOOK_ALLOWLIST": "127.0.0.1",
                    "SIDECAR_CONCURRENCY": "4",
                    "SIDECAR_LOG_FORMAT": "json",
                    **env,
                },
                folder / f"sidecar-{index}.log",
            )
            stack.callback(process.stop)
            processes.append(process.start())
        body = {"model_input": {"prompt": "Benchmark."}, "webhook_endpoint": receiver.url}
        clients_http = [stack.enter_context(httpx.Client(base_url=p.url, timeout=30)) for p in processes]
        statuses: list[int] = []

        def post(index: int) -> None:
            response = clients_http[index % len(clients_http)].post("/async_predict", json=body)
            statuses.append(response.status_code)

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(post, range(jobs)))
        accepted_s = time.perf_counter() - started
        wait_for(lambda: len(receiver.acknowledged()) >= jobs, 600, "every job delivered")
        delivered_s = time.perf_counter() - started
        assert statuses.count(202) == jobs, f"not all accepted: {sorted(set(statuses))}"
    return {
        "sidecars": sidecars,
        "jobs": jobs,
        "clients": clients,
        "accepted_per_s": round(jobs / accepted_s, 1),
        "delivered_per_s": round(jobs / delivered_s, 1),
    }


def bench_memory(minutes: int, folder: Path) -> dict[str, Any]:
    """Peak RSS of one sidecar process through a job of `minutes` of WAV and its download."""
    from tests.sidecar.test_memory import long_prediction, peak_rss_mib

    with ExitStack() as stack, stub_model_and_receiver() as (model, receiver):
        model.answer = long_prediction(minutes * 60)
        process = SidecarProcess(
            {
                "SIDECAR_DB_PATH": str(folder / f"memory-{minutes}.sqlite3"),
                "SIDECAR_INLINE_AUDIO_MAX_BYTES": "0",  # a download link for both lengths
                "SIDECAR_MODEL_URL": model.predict_url,
                "SIDECAR_WEBHOOK_SECRET": SECRET,
                "SIDECAR_WEBHOOK_ALLOWLIST": "127.0.0.1",
            },
            folder / f"memory-{minutes}.log",
        )
        stack.callback(process.stop)
        process.start()
        assert process.process is not None
        idle = peak_rss_mib(process.process.pid)
        body = {"model_input": {"prompt": "Long."}, "webhook_endpoint": receiver.url}
        httpx.post(f"{process.url}/async_predict", json=body, timeout=30).raise_for_status()
        wait_for(lambda: receiver.acknowledged(), 600, "the long job delivered")
        after_job = peak_rss_mib(process.process.pid)
        link = receiver.acknowledged()[0].event()["data"]["audio_url"]
        with httpx.stream("GET", link, timeout=120) as response:
            size = sum(len(piece) for piece in response.iter_bytes())
        after_download = peak_rss_mib(process.process.pid)
    return {
        "audio_minutes": minutes,
        "audio_mb": round(size / 1e6, 1),
        "idle_rss_mib": round(idle),
        "peak_rss_after_job_mib": round(after_job),
        "peak_rss_after_download_mib": round(after_download),
        "peak_over_idle": round(after_download / idle, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per store measurement")
    parser.add_argument("--http-jobs", type=int, default=400, help="jobs per HTTP measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients / store writers")
    parser.add_argument("--claimers", type=int, default=4)
    parser.add_argument("--postgres-url", default="", help="an existing (empty) database; default: start one")
    parser.add_argument("--layers", default="store,http,memory", help="comma-separated: store, http, memory")
    args = parser.parse_args()
    layers = set(args.layers.split(","))

    results: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jobs-bench-")))
        if "memory" in layers:
            for minutes in (1, 10):
                results[f"memory_{minutes}_min"] = bench_memory(minutes, folder)
        if not layers & {"store", "http"}:
            print(json.dumps(results, indent=2))
            return
        if args.postgres_url:
            new_database: Callable[[], str] = lambda: args.postgres_url  # noqa: E731
        else:
            from tests.sidecar.postgres import postgres_server

            server = stack.enter_context(postgres_server(durable=True))
            new_database = server.new_database
        if "store" in layers:
            sqlite_path = folder / "store.sqlite3"
            results["store_sqlite"] = bench_store(lambda: JobStore(sqlite_path), args.jobs, args.clients, args.claimers)
            pg_url = new_database()
            results["store_postgres"] = bench_store(
                lambda: PostgresJobStore(pg_url, pool_size=args.clients), args.jobs, args.clients, args.claimers
            )
        if "http" in layers:
            sqlite_env = {"SIDECAR_DB_PATH": str(folder / "http.sqlite3")}
            results["http_sqlite_1"] = bench_http(sqlite_env, 1, args.http_jobs, args.clients, folder)
            for sidecars in (1, 2):
                pg_env = {"SIDECAR_DATABASE_URL": new_database()}
                results[f"http_postgres_{sidecars}"] = bench_http(
                    pg_env, sidecars, args.http_jobs, args.clients, folder
                )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
