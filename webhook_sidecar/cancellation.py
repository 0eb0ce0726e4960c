"""Stopping a running job when its caller cancels it (`DELETE /jobs/{id}`), from any replica.

The cancel request is a mark in the store (`cancel_requested_at`), since the replica that answers the
DELETE is often not the one running the job. The runner checks the mark every `SIDECAR_CANCEL_POLL_S`
(1 s) beside the run and, once it is set, cancels the run's task: an httpx request cancelled mid-call
closes its connection, and the model server's CancelOnDisconnect middleware then drops the request's
queued chunks, so the GPU stops working for a result nobody wants. A store that cannot be read reads as
"not cancelled" (the next check tries again): a database hiccup never stops a job by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .jobs import StoreUnavailable

logger = logging.getLogger("webhook_sidecar.cancellation")
T = TypeVar("T")


class JobCancelled(Exception):
    """The caller cancelled the job while it ran; the run was stopped."""


async def unless_cancelled(
    run: Coroutine[Any, Any, T], cancel_requested: Callable[[], Awaitable[bool]], every_s: float
) -> T:
    """Await `run`, asking `cancel_requested()` every `every_s`; once it says yes, cancel the run, wait for
    it to unwind (its `finally` blocks, a model connection closed) and raise JobCancelled.

    A cancel of the caller itself (shutdown) cancels the run too and propagates as usual.
    """
    task = asyncio.ensure_future(run)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                return task.result()
            if await _asked(cancel_requested):
                task.cancel()
                await asyncio.wait({task})
                if task.cancelled():
                    raise JobCancelled
                return task.result()  # it ended while the cancel arrived: too late to stop
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


async def _asked(cancel_requested: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await cancel_requested()
    except StoreUnavailable as error:
        logger.debug("cancel check failed: %s", error)
        return False
