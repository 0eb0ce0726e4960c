"""The job service: owns the store, the run loops, the delivery loops and the drain on shutdown.

Loops poll the store (the source of truth) and are woken early by intake and finished runs, so a new
job starts at once and a restart needs no in-memory state. Run loops stop claiming when draining;
delivery loops keep going until `stop`, so results finished during the drain still go out.

Each claimed job runs in a task of its own, registered with `Leases` (leases.py) for as long as it is
worked on: with a shared (PostgreSQL) store only those ids are renewed, and a task whose lease is lost is
cancelled. A run loop claims only while its own model server is ready (readiness.py). A recover loop takes
over rows whose lease lapsed (another sidecar died, or lost track of them); jobs queued by another replica
are found by polling (`poll_interval_s`). At stop everything still held is released at once for the
other replicas.
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
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from .auth import owner_of
from .config import Settings
from .connections import WebhookClients
from .delivery import Deliverer
from .jobs import Caps, Job, NewJob, StaleJob, StoreUnavailable
from .leases import Leases
from .limits import IntakeLimits
from .metrics import SidecarMetrics
from .protocol import AsyncPredictRequest
from .readiness import ModelGate
from .store import JobStore
from .store_base import Store, new_op
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
        self.admin_keys = self.settings.load_admin_keys()
        self.allowlist = Allowlist.parse(settings.webhook_allowlist, settings.webhook_ports)
        self.limits = IntakeLimits.from_environment()
        self.caps = Caps(settings.max_queued_per_key, settings.max_queued_total)
        self.leases = Leases(self.store, settings.lease_s)
        self.started = False
        self.draining = False
        self.runs_in_flight = 0
        self.deliveries_in_flight = 0
        self._owner_key = b""
        self._tasks: list[asyncio.Task[None]] = []
        self._model_client: httpx.AsyncClient | None = None
        self._webhook_clients: WebhookClients | None = None
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
        self._owner_key = await asyncio.to_thread(self.store.owner_key)
        runs, deliveries = await asyncio.to_thread(self.store.recover)
        if runs or deliveries:
            logger.info("resuming %d interrupted runs and %d interrupted deliveries", runs, deliveries)
        self.metrics.read_states_from(self.store.counts, "postgres" if self.store.shared else "sqlite")
        self._run_wakeup, self._delivery_wakeup = asyncio.Event(), asyncio.Event()
        # Env proxies are ignored: the model is on localhost, webhooks go to the address we checked.
        self._model_client = model_client = httpx.AsyncClient(trust_env=False)
        self._webhook_clients = WebhookClients(_webhook_tls(settings))
        model_headers = {"authorization": f"Bearer {key}"} if (key := settings.model_key(self.api_keys)) else {}
        gate = ModelGate(model_client, settings.readiness_url, model_headers, max_s=settings.retry_max_s)
        runner = JobRunner(self.store, settings, model_client, model_headers, self.wake_delivery, gate)
        deliverer = Deliverer(self.store, settings, self.metrics, self._webhook_clients, self.allowlist)
        self._tasks = [
            *(asyncio.create_task(self._run_loop(runner, gate)) for _ in range(settings.concurrency)),
            *(asyncio.create_task(self._delivery_loop(deliverer)) for _ in range(settings.delivery_concurrency)),
            asyncio.create_task(self._purge_loop()),
        ]
        if self.store.shared:
            self._tasks += [asyncio.create_task(self.leases.run()), asyncio.create_task(self._recover_loop())]
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

    def owner(self, key: str | None) -> str | None:
        """The owner recorded for jobs made with `key` (a keyed hash; None with auth off)."""
        return owner_of(key, self._owner_key)

    async def submit(
        self, request: AsyncPredictRequest, public_base: str, idempotency_key: str | None, owner: str | None = None
    ) -> tuple[Job, bool]:
        """Store the job (committed before this returns); an idempotency key seen before returns that job.
        QueueFull past a cap of unfinished jobs."""
        model_input = request.model_input.model_dump(mode="json", exclude_unset=True)
        self.limits.check(model_input)
        new = NewJob(
            id=new_job_id(),
            model_input=model_input,
            webhook_endpoint=request.webhook_endpoint,
            public_base=public_base,
            request_hash=request_hash(request),
            idempotency_key=idempotency_key,
            owner=owner,
        )
        job, created = await asyncio.to_thread(self.store.create, new, self.caps)
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
        if self._model_client is not None:
            await self._model_client.aclose()
        if self._webhook_clients is not None:
            await self._webhook_clients.aclose()
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

    async def _run_loop(self, runner: JobRunner, gate: ModelGate) -> None:
        assert self._run_wakeup is not None
        while not self.draining:
            self._run_wakeup.clear()
            if not await gate.is_open():  # this pod's model cannot take a job: leave it to the others
                await self._idle(self._run_wakeup, lambda: None)
                continue
            job, leased_at = await self._claim(self.store.claim_run, lambda: self.draining)
            if job is None:
                await self._idle(self._run_wakeup, self.store.next_run_due)
                continue
            self.runs_in_flight += 1
            try:
                await self._work(job, runner.run(job), leased_at, "running")
            finally:
                self.runs_in_flight -= 1

    async def _delivery_loop(self, deliverer: Deliverer) -> None:
        assert self._delivery_wakeup is not None
        while True:
            self._delivery_wakeup.clear()
            job, leased_at = await self._claim(self.store.claim_delivery)
            if job is None:
                await self._idle(self._delivery_wakeup, self.store.next_delivery_due)
                continue
            self.deliveries_in_flight += 1
            try:
                await self._work(job, deliverer.deliver(job), leased_at, "delivering")
            finally:
                self.deliveries_in_flight -= 1

    async def _claim(
        self, claim: Callable[..., Job | None], stop: Callable[[], bool] = lambda: False
    ) -> tuple[Job | None, float]:
        """A claim, retried with its `op` while the store is unreachable (a claim that landed but whose
        reply was lost is found again) until `stop()`; the job (None when nothing is due) and when the
        lease it holds was set (monotonic). A claim abandoned at stop is not held, so its lease lapses.

        A claim that needed retries may have landed on an earlier try, its lease set then: it is renewed
        (and so confirmed ours) before any work starts on it."""
        op = new_op()
        tries = 0
        while not stop():
            sent = time.monotonic()
            tries += 1
            try:
                job = await asyncio.to_thread(claim, op)
            except StoreUnavailable as error:
                logger.warning("store call %s failed: %s", claim.__name__, error)
            except Exception:
                logger.exception("store call %s failed", claim.__name__)
            else:
                if job is None or tries == 1 or await self._still_ours(job.id):
                    return job, sent
            await asyncio.sleep(self.settings.poll_interval_s)
        return None, 0.0

    async def _still_ours(self, job_id: str) -> bool:
        try:
            return job_id in await asyncio.to_thread(self.store.renew, [job_id])
        except StoreUnavailable:
            return False  # not confirmed: left to lapse (and be handed back) rather than run twice

    async def _work(self, job: Job, work: Coroutine[Any, Any, None], leased_at: float, doing: str) -> None:
        """Run `work` on `job` in a task of its own, held (and renewed) while it runs; a lost lease cancels
        it. Nothing a job does may end a loop: an unexpected error leaves the job to its lease."""
        task = asyncio.ensure_future(work)
        self.leases.hold(job.id, task, leased_at)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # shutdown: stop the work; release_all hands the job back
            task.cancel()
            await asyncio.wait({task})
            raise
        finally:
            self.leases.drop(job.id)
        if task.cancelled():  # its lease was lost (leases.py logged why): the job is another sidecar's
            return
        error = task.exception()
        if isinstance(error, StaleJob):
            logger.warning("job %s: %s (its lease lapsed; another sidecar took it over)", job.id, error)
        elif error is not None:
            logger.error("job %s: unexpected error while %s", job.id, doing, exc_info=error)
            await self._after_error(job, doing, error)

    async def _after_error(self, job: Job, doing: str, error: BaseException) -> None:
        """An internal error: back to the queue (attempts bound the retries), or a delivery retry later."""
        problem = f"internal error: {error!r}"
        if doing == "running":
            await self._guarded(self.store.requeue, job.id, problem, 1.0)
        else:
            await self._guarded(self.store.schedule_retry, job.id, 1.0, problem, None)

    async def _purge_loop(self) -> None:
        while True:
            purged = await self._guarded(self.store.purge, self.settings.job_retention_s)
            if purged:
                logger.info("purged %d finished jobs past retention", purged)
            await asyncio.sleep(_PURGE_INTERVAL_S)

    async def _recover_loop(self) -> None:
        """Shared store: take over rows whose lease lapsed, every lease/4 (at most 5 s) but not more
        often than the poll interval."""
        every = max(self.settings.poll_interval_s, min(self.settings.lease_s / 4, 5.0))
        while True:
            taken = await self._guarded(self.store.recover)
            if taken and any(taken):
                logger.warning("took over %d runs and %d deliveries whose lease lapsed", *taken)
                self.wake_runs()
                self.wake_delivery()
            await asyncio.sleep(every)

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
