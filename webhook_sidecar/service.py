"""The job service: owns the store, the run loops, the delivery loops and the drain on shutdown.

Loops poll the store (the source of truth) and are woken early by intake and finished runs, so a new
job starts at once and a restart needs no in-memory state. Run loops stop claiming when draining;
delivery loops keep going until `stop`, so results finished during the drain still go out.

With a shared (PostgreSQL) store a lease loop renews this sidecar's leases and takes over rows whose
lease lapsed (another sidecar died); jobs queued by another replica are found by polling
(`poll_interval_s`). At stop everything still held is released at once for the other replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from .config import Settings
from .delivery import Deliverer
from .jobs import Job, NewJob, StaleJob, Store, StoreUnavailable
from .metrics import SidecarMetrics
from .protocol import AsyncPredictRequest
from .store import JobStore
from .store_postgres import PostgresJobStore
from .urls import Allowlist
from .worker import JobRunner

logger = logging.getLogger("webhook_sidecar")

_PURGE_INTERVAL_S = 60.0
T = TypeVar("T")


def open_store(settings: Settings, on_transition: Callable[[str], None]) -> Store:
    """The store `SIDECAR_DATABASE_URL` names: SQLite (one process) or PostgreSQL (shared)."""
    path = settings.sqlite_path
    if path is not None:
        return JobStore(path, on_transition=on_transition)
    return PostgresJobStore(
        settings.store_url,
        settings.lease_s,
        on_transition=on_transition,
        pool_size=settings.db_pool_size,
        wait_s=settings.db_wait_s,
    )


def _webhook_tls(settings: Settings) -> ssl.SSLContext | bool:
    """Verify https receivers against the public CAs, or only against `webhook_ca_file` when set."""
    if settings.webhook_ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(settings.webhook_ca_file))


def new_job_id() -> str:
    """128 random bits, URL-safe: a job id is the only thing that lets someone read a job's status."""
    return secrets.token_urlsafe(16)


def request_hash(request: AsyncPredictRequest) -> str:
    body = {
        "model_input": request.model_input.model_dump(mode="json", exclude_unset=True),
        "webhook_endpoint": request.webhook_endpoint,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class JobService:
    """One per process: the API calls `submit`; `start`/`drain`/`stop` follow the server's lifecycle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.with_webhook_secret()
        self.metrics = SidecarMetrics()
        self.store = open_store(self.settings, self.metrics.count_transition)
        self.api_keys = self.settings.load_api_keys()
        self.allowlist = Allowlist.parse(settings.webhook_allowlist)
        self.started = False
        self.draining = False
        self.runs_in_flight = 0
        self.deliveries_in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[httpx.AsyncClient] = []
        self._run_wakeup: asyncio.Event | None = None
        self._delivery_wakeup: asyncio.Event | None = None

    async def start(self) -> None:
        settings = self.settings
        # Store calls and DNS lookups run in threads; the default pool (CPUs + 4) is small on a pod
        # with one or two CPUs, and slow DNS for a few webhooks must not stall intake.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="sidecar")
        )
        await asyncio.to_thread(self.store.open)
        runs, deliveries = await asyncio.to_thread(self.store.recover)
        if runs or deliveries:
            logger.info("resuming %d interrupted runs and %d interrupted deliveries", runs, deliveries)
        self.metrics.read_states_from(self.store.counts, "postgres" if self.store.shared else "sqlite")
        self._run_wakeup, self._delivery_wakeup = asyncio.Event(), asyncio.Event()
        # Env proxies are ignored: webhooks go to the address we checked, the model is on localhost.
        model_client = httpx.AsyncClient(trust_env=False)
        webhook_client = httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=_webhook_tls(settings))
        self._clients = [model_client, webhook_client]
        runner = JobRunner(self.store, settings, model_client, settings.model_key(self.api_keys), self.wake_delivery)
        deliverer = Deliverer(self.store, settings, self.metrics, webhook_client, self.allowlist)
        self._tasks = [
            *(asyncio.create_task(self._run_loop(runner)) for _ in range(settings.concurrency)),
            *(asyncio.create_task(self._delivery_loop(deliverer)) for _ in range(settings.delivery_concurrency)),
            asyncio.create_task(self._purge_loop()),
        ]
        if self.store.shared:
            self._tasks.append(asyncio.create_task(self._lease_loop()))
        self.started = True
        logger.info(
            "job service started: store %s, model %s, concurrency %d, retry window %.0f s",
            self.store.describe(),
            settings.model_url,
            settings.concurrency,
            settings.retry_window_s,
        )

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    async def submit(
        self, request: AsyncPredictRequest, public_base: str, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        """Store the job (committed before this returns); an idempotency key seen before returns that job."""
        new = NewJob(
            id=new_job_id(),
            model_input=request.model_input.model_dump(mode="json", exclude_unset=True),
            webhook_endpoint=request.webhook_endpoint,
            public_base=public_base,
            request_hash=request_hash(request),
            idempotency_key=idempotency_key,
        )
        job, created = await asyncio.to_thread(self.store.create, new)
        if created:
            self.wake_runs()
        return job, created

    async def cancel(self, job_id: str) -> Job | None:
        """The caller's cancel (any replica): a queued job ends now, a running one is marked and its
        sidecar stops it. The job as it is afterwards; None when there is no such job."""
        return await asyncio.to_thread(self.store.cancel, job_id)

    def wake_runs(self) -> None:
        if self._run_wakeup is not None:
            self._run_wakeup.set()

    def wake_delivery(self) -> None:
        if self._delivery_wakeup is not None:
            self._delivery_wakeup.set()

    async def drain(self, grace_s: float) -> bool:
        """Stop taking work; wait for runs and due deliveries to finish. False if grace ran out."""
        self.draining = True
        self.wake_runs()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.runs_in_flight == 0 and self.deliveries_in_flight == 0:
                if self.store.shared:  # due deliveries are the other replicas' to make
                    logger.info("drained: nothing in flight")
                    return True
                due = await asyncio.to_thread(self.store.next_delivery_due)
                if due is None or due > time.time():
                    logger.info("drained: nothing in flight")
                    return True
            await asyncio.sleep(0.05)
        logger.warning(
            "grace period over with %d runs and %d deliveries in flight: handing them back",
            self.runs_in_flight,
            self.deliveries_in_flight,
        )
        return False

    async def stop(self) -> None:
        """Cancel the loops (in-flight work is handed back to the store), close clients and store."""
        self.draining = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for client in self._clients:
            await client.aclose()
        if self.started:
            # A claim still finishing in a thread when its task was cancelled is handed back here;
            # with a shared store the other replicas take it over at once, not after the lease.
            try:
                runs, deliveries = await asyncio.to_thread(self.store.release_all)
                if runs or deliveries:
                    logger.info("handed back %d runs and %d deliveries", runs, deliveries)
            except Exception:
                logger.exception("could not hand work back; it returns when its lease lapses")
        self.store.close()
        self.started = False

    # -- loops -----------------------------------------------------------------------------------

    async def _run_loop(self, runner: JobRunner) -> None:
        assert self._run_wakeup is not None
        while not self.draining:
            self._run_wakeup.clear()
            job = await self._guarded(self.store.claim_run)
            if job is None:
                await self._idle(self._run_wakeup, self.store.next_run_due)
                continue
            self.runs_in_flight += 1
            try:
                await runner.run(job)
            except StaleJob as error:
                logger.warning("job %s: %s (its lease lapsed; another sidecar took it over)", job.id, error)
            except Exception as error:
                # Nothing a job does may end a loop. Back to the queue: attempts bound the retries.
                logger.exception("job %s: unexpected error while running", job.id)
                await self._guarded(self.store.requeue, job.id, f"internal error: {error!r}", 1.0)
            finally:
                self.runs_in_flight -= 1

    async def _delivery_loop(self, deliverer: Deliverer) -> None:
        assert self._delivery_wakeup is not None
        while True:
            self._delivery_wakeup.clear()
            job = await self._guarded(self.store.claim_delivery)
            if job is None:
                await self._idle(self._delivery_wakeup, self.store.next_delivery_due)
                continue
            self.deliveries_in_flight += 1
            try:
                await deliverer.deliver(job)
            except StaleJob as error:
                logger.warning("job %s: %s (its lease lapsed; another sidecar took it over)", job.id, error)
            except Exception as error:
                logger.exception("job %s: unexpected error while delivering", job.id)
                await self._guarded(self.store.schedule_retry, job.id, 1.0, f"internal error: {error!r}", None)
            finally:
                self.deliveries_in_flight -= 1

    async def _purge_loop(self) -> None:
        while True:
            purged = await self._guarded(self.store.purge, self.settings.job_retention_s)
            if purged:
                logger.info("purged %d finished jobs past retention", purged)
            await asyncio.sleep(_PURGE_INTERVAL_S)

    async def _lease_loop(self) -> None:
        """Shared store: renew our leases every lease/3; take over lapsed ones every lease/4 at most."""
        lease_s = self.settings.lease_s
        renew_every = lease_s / 3
        recover_every = max(self.settings.poll_interval_s, min(lease_s / 4, 5.0))
        next_renew = next_recover = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_renew:
                await self._guarded(self.store.renew)
                next_renew = now + renew_every
            if now >= next_recover:
                taken = await self._guarded(self.store.recover)
                if taken and any(taken):
                    logger.warning("took over %d runs and %d deliveries whose lease lapsed", *taken)
                    self.wake_runs()
                    self.wake_delivery()
                next_recover = now + recover_every
            await asyncio.sleep(max(0.01, min(next_renew, next_recover) - time.monotonic()))

    async def _idle(self, wakeup: asyncio.Event, next_due: Callable[[], float | None]) -> None:
        """Sleep until woken, the next due time, or the poll interval, whichever comes first."""
        timeout = self.settings.poll_interval_s
        due = await self._guarded(next_due)
        if due is not None:
            timeout = min(timeout, max(0.01, due - time.time()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout)

    async def _guarded(self, function: Callable[..., T], *args: Any) -> T | None:
        """A store call in a thread; an error (disk full, locked) is logged, and the loop goes on."""
        try:
            return await asyncio.to_thread(function, *args)
        except Exception as error:
            name = getattr(function, "__name__", function)
            if isinstance(error, StoreUnavailable):  # expected while the database restarts: one line, no trace
                logger.warning("store call %s failed: %s", name, error)
            else:
                logger.exception("store call %s failed", name)
            await asyncio.sleep(self.settings.poll_interval_s)
            return None
