"""The jobs this sidecar works on: their leases kept alive, their work stopped when a lease is lost, and
store writes retried until they land.

What the most trusted queues promise (SQS visibility timeouts, Sidekiq's reliable fetch, pgqueuer and
Procrastinate leases), here for the PostgreSQL store:
- **Only what is held in memory is renewed.** Each run and delivery registers its job id with its task
  while it works and drops it when it ends; the renewal (every `lease_s / 6`, with jitter, so a short
  database outage does not cost a lease) names exactly those ids. A row this sidecar lost track of (a
  claim whose reply was lost, a transition that never landed before the task ended) is not renewed: its
  lease lapses and another replica's `recover` hands it back. Nothing stays `running` for the life of a pod.
- **A lost lease stops the work.** When a renewal no longer returns a job (another replica took it over)
  its task is cancelled at once; when no renewal has succeeded for a whole lease (the database
  unreachable), the task is cancelled just before the lease runs out (`_EXPIRY_MARGIN`), since another
  replica may take the job as soon as it does. Cancelling a run closes its model call (the model server
  drops the request's work), so a job never runs on two GPUs at once.
- **Writes land or the lease hands the job back.** `until_landed` retries a store write through
  `StoreUnavailable` with back-off, with one `op` token for all its tries (a reply lost after the commit is
  recognised, store_base.py). It stops when the write lands, when the row is no longer ours (`StaleJob`),
  or when the lease watcher cancels the task; if the process dies first, the lapsed lease hands the job
  back.

Local deadlines use the monotonic clock from *before* the call that set the lease in the database
(claim or renewal), so the local expiry is never later than the database's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .jobs import StoreUnavailable
from .retry import backoff_s
from .store_base import Store, new_op

logger = logging.getLogger("webhook_sidecar.leases")
T = TypeVar("T")

#: Renewals per lease: five may fail (a database restart) before the lease is at risk.
RENEWALS_PER_LEASE = 6
#: Share of the lease left when a task that could not renew is stopped (at most _MAX_MARGIN_S).
_EXPIRY_MARGIN = 0.1
_MAX_MARGIN_S = 2.0
#: Back-off of a store write that could not reach the store.
_WRITE_RETRY_BASE_S = 0.1
_WRITE_RETRY_MAX_S = 2.0


@dataclass
class Held:
    """One job this sidecar works on: the task working on it and when its lease runs out (monotonic)."""

    job_id: str
    task: asyncio.Task[Any]
    expires_at: float
    #: Why the work was stopped; None while the lease is ours.
    lost: str | None = None


@dataclass
class Leases:
    """The held jobs of one sidecar; `run()` renews them and stops the work of any lease that is lost."""

    store: Store
    lease_s: float
    clock: Callable[[], float] = time.monotonic
    held: dict[str, Held] = field(default_factory=dict)

    @property
    def margin_s(self) -> float:
        return min(_MAX_MARGIN_S, self.lease_s * _EXPIRY_MARGIN)

    def hold(self, job_id: str, task: asyncio.Task[Any], leased_at: float) -> Held:
        """Register `task` as working on `job_id`, whose lease was set by a call sent at `leased_at`."""
        expires = leased_at + self.lease_s if self.store.shared else float("inf")
        entry = Held(job_id, task, expires)
        self.held[job_id] = entry
        return entry

    def drop(self, job_id: str) -> None:
        self.held.pop(job_id, None)

    def lose(self, entry: Held, reason: str) -> None:
        """Stop the work on a job whose lease is (or may be) another sidecar's now."""
        if entry.lost is not None or self.held.get(entry.job_id) is not entry:
            return
        entry.lost = reason
        logger.warning("job %s: %s: stopping its work", entry.job_id, reason)
        entry.task.cancel()

    async def run(self) -> None:
        """Renew and watch until cancelled (shared stores only: a SQLite file has no leases)."""
        await asyncio.gather(self._renew_loop(), self._watch_loop())

    async def renew_once(self) -> None:
        ids = list(self.held)
        if not ids:
            return
        sent = self.clock()
        try:
            ours = await asyncio.to_thread(self.store.renew, ids)
        except StoreUnavailable as error:
            logger.warning("could not renew %d leases: %s", len(ids), error)
            return
        for job_id in ids:
            entry = self.held.get(job_id)
            if entry is None:
                continue
            if job_id in ours:
                entry.expires_at = max(entry.expires_at, sent + self.lease_s)
            else:
                self.lose(entry, "its lease is no longer this sidecar's (taken over)")

    async def _renew_loop(self) -> None:
        every = self.lease_s / RENEWALS_PER_LEASE
        while True:
            await asyncio.sleep(every * random.uniform(0.8, 1.0))  # jitter: replicas do not renew in step
            await self.renew_once()

    async def _watch_loop(self) -> None:
        every = min(0.25, self.lease_s / 20)
        while True:
            await asyncio.sleep(every)
            now = self.clock()
            for entry in list(self.held.values()):
                if now >= entry.expires_at - self.margin_s:
                    self.lose(entry, "no lease renewal for a whole lease (store unreachable)")


async def until_landed(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, op=..., **kwargs)` in a thread, retried with back-off while the store is unreachable,
    with one `op` token for every try. StaleJob (the row is not ours any more) and cancellation (the lease
    watcher stopped the task, or shutdown) end it."""
    op = new_op()
    tries = 0
    while True:
        try:
            return await asyncio.to_thread(call, *args, op=op, **kwargs)
        except StoreUnavailable as error:
            tries += 1
            name = getattr(call, "__name__", call)
            logger.warning("store write %s failed (try %d), retrying: %s", name, tries, error)
            await asyncio.sleep(backoff_s(tries, _WRITE_RETRY_BASE_S, _WRITE_RETRY_MAX_S))
