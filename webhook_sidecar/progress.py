"""A running job's progress, read from the local model server while its predict call is in flight.

The sidecar sends the job id as `x-request-id` with every model call; the model server answers
`GET /v1/requests/{id}/progress` with `{"chunks_done", "chunks_total", ...}` for the requests it knows.
The answer is a nicety for `GET /jobs/{id}`: a 404 (not planned yet, another replica, an older model
server without the route), a refused connection, a timeout or a malformed body is logged at debug and
never touches the job. The store is written only when the numbers change, and only while the run is
this sidecar's (`note_progress` refuses a finished or taken-over job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pydantic

from .jobs import StaleJob, StoreUnavailable
from .protocol import JobProgress
from .store_base import Store

logger = logging.getLogger("webhook_sidecar.progress")

#: One progress read; a slow answer only delays the next one.
_READ_TIMEOUT_S = 5.0


def progress_url(model_url: str, request_id: str) -> str:
    """The progress route on the model server of `model_url` (same scheme, host and port)."""
    return str(httpx.URL(model_url).copy_with(path=f"/v1/requests/{quote(request_id, safe='')}/progress", query=None))


@contextlib.asynccontextmanager
async def watching_progress(
    store: Store, client: httpx.AsyncClient, url: str, job_id: str, headers: dict[str, str], every_s: float
) -> AsyncIterator[None]:
    """Poll `url` every `every_s` while the body runs (0: not at all). On exit the poller is cancelled
    and awaited, a store write it started included, so nothing is written after the call ended."""
    if every_s <= 0:
        yield
        return
    task = asyncio.create_task(_poll(store, client, url, job_id, headers, every_s), name=f"progress-{job_id}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})  # not `await task`: a cancel of the caller itself must still propagate
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("job %s: progress polling stopped: %r", job_id, error)


async def _poll(
    store: Store, client: httpx.AsyncClient, url: str, job_id: str, headers: dict[str, str], every_s: float
) -> None:
    written: JobProgress | None = None
    while True:
        await asyncio.sleep(every_s)
        progress = await read_progress(client, url, headers)
        if progress is None or progress == written:
            continue
        write = asyncio.ensure_future(
            asyncio.to_thread(store.note_progress, job_id, progress.chunks_done, progress.chunks_total)
        )
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})  # let a write under way land before the run goes on
            raise
        except StaleJob:
            return  # the run is over (or no longer ours): nothing more to report
        except StoreUnavailable as error:
            logger.debug("job %s: progress not stored: %s", job_id, error)
            continue
        written = progress


async def read_progress(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> JobProgress | None:
    """The model server's progress on one request, or None when it has none to give."""
    try:
        response = await client.get(url, headers=headers, timeout=_READ_TIMEOUT_S)
    except httpx.HTTPError as error:
        logger.debug("progress %s: %r", url, error)
        return None
    if response.status_code != 200:
        logger.debug("progress %s: HTTP %d", url, response.status_code)
        return None
    try:
        return JobProgress.model_validate_json(response.content)
    except pydantic.ValidationError as error:
        logger.debug("progress %s: malformed answer: %s", url, error.errors(include_url=False))
        return None
