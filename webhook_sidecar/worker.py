"""Runs jobs: one model call per job (`{"instances": [model_input]}`) against the model server.

What the model's answer means for the job:
- 200: `succeeded`, the prediction is stored for delivery.
- 503/429 or no connection (overloaded, or still loading at pod start): wait (Retry-After when given)
  and call again; not counted against `max_attempts`, bounded by the job timeout.
Every other answered call counts as an attempt, and so does a call cut short by a crash (`recover`
counts it), so a job that keeps killing the sidecar gives up after `max_attempts` restarts.
- other 5xx or a dropped connection: counted; retried with back-off up to `max_attempts`.
- 4xx (400: a bound the model server checks, e.g. prompt length): `failed` with its message.
- no answer within the job timeout: `failed` (Bark may be stuck; a retry would double the load).
A `failed` job is delivered as a `.failed` CloudEvent like any result.
- the caller cancelled it (`DELETE /jobs/{id}`, any replica): the run is stopped within
  `cancel_poll_s` (cancellation.py), the model call aborted, and the job ends `cancelled`, never
  delivered; the aborted call is not counted.

Every call carries the job id as `x-request-id` (the model server's logs and its progress route use it);
while a call is in flight, progress.py reads the model's progress into the job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

import httpx

from .cancellation import JobCancelled, unless_cancelled
from .config import Settings
from .jobs import Job, StaleJob, Store
from .progress import progress_url, watching_progress
from .protocol import JobFailure
from .retry import backoff_s, parse_retry_after

logger = logging.getLogger("webhook_sidecar.worker")

_BUSY = (429, 503)


class JobRunner:
    """Turns one claimed (`running`) job into `succeeded` or `failed`, or hands it back on shutdown."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        client: httpx.AsyncClient,
        model_key: str = "",
        on_finished: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.client = client
        self.headers = {"authorization": f"Bearer {model_key}"} if model_key else {}
        self.on_finished = on_finished

    async def run(self, job: Job) -> None:
        try:
            if job.cancel_requested_at is None:  # else a handed-back run its caller cancelled meanwhile
                await unless_cancelled(self._run(job), lambda: self._cancel_requested(job), self.settings.cancel_poll_s)
                return
        except JobCancelled:
            pass
        except asyncio.CancelledError:
            # Shutdown mid-call: hand the job back now (a restart would do it too, from `recover`).
            with contextlib.suppress(StaleJob):  # it finished while the cancel arrived
                self.store.requeue(job.id, error="interrupted: the sidecar stopped during the model call")
            raise
        await self._finish_cancelled(job)

    async def _cancel_requested(self, job: Job) -> bool:
        return await asyncio.to_thread(self.store.cancel_requested, job.id)

    async def _finish_cancelled(self, job: Job) -> None:
        try:
            await asyncio.to_thread(self.store.mark_cancelled, job.id)
        except StaleJob as error:  # its result was stored while the cancel arrived: it is delivered
            logger.info("job %s: cancelled too late: %s", job.id, error)
            return
        logger.info("job %s cancelled by its caller", job.id)

    async def _run(self, job: Job) -> None:
        settings = self.settings
        deadline = time.monotonic() + settings.job_timeout_s
        waits = 0
        if job.attempts >= settings.max_attempts:
            await self._finish_failed(job, f"gave up after {job.attempts} attempts", None)
            return
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._finish_failed(job, f"timed out after {settings.job_timeout_s:g} s", None)
                return
            try:
                # httpx's timeout is per read; wait_for holds the whole call to the job's deadline.
                async with self._watching_progress(job):
                    response = await asyncio.wait_for(
                        self.client.post(
                            settings.model_url,
                            json={"instances": [job.model_input]},
                            headers={**self.headers, "x-request-id": job.id},
                            timeout=httpx.Timeout(remaining, connect=min(remaining, 10.0)),
                        ),
                        remaining,
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                # Nothing reached the model (not up yet): not counted, the job timeout bounds it.
                waits += 1
                await self._note(job, 0, f"model server unreachable: {error!r}")
                await self._sleep(backoff_s(waits, settings.retry_base_s, settings.retry_max_s), deadline)
                continue
            except (httpx.TimeoutException, asyncio.TimeoutError):
                await self._note(job, 1)
                timeout = f"the model did not answer within the job timeout ({settings.job_timeout_s:g} s)"
                await self._finish_failed(job, timeout, None)
                return
            except httpx.TransportError as error:
                if await self._retry_counted(job, f"model call broke off: {error!r}", None, deadline):
                    continue
                return

            status = response.status_code
            if status in _BUSY:
                waits += 1
                await self._note(job, 0, f"model busy ({status}): {_error_message(response)}")
                delay = parse_retry_after(response.headers.get("retry-after"))
                if delay is None:
                    delay = backoff_s(waits, settings.retry_base_s, settings.retry_max_s)
                await self._sleep(delay, deadline)
                continue
            if status >= 500:
                problem = f"model error ({status}): {_error_message(response)}"
                if await self._retry_counted(job, problem, status, deadline):
                    continue
                return
            await self._note(job, 1)
            if status == 200:
                await self._finish_succeeded(job, response)
            else:
                await self._finish_failed(job, _error_message(response), status)
            return

    def _watching_progress(self, job: Job) -> contextlib.AbstractAsyncContextManager[None]:
        url = progress_url(self.settings.model_url, job.id)
        return watching_progress(self.store, self.client, url, job.id, self.headers, self.settings.progress_poll_s)

    async def _note(self, job: Job, counted: int, error: str | None = None) -> int:
        """Count an answered model call (a 503 or no connection is not counted); keep the error."""
        return await asyncio.to_thread(self.store.count_attempt, job.id, counted, error)

    async def _retry_counted(self, job: Job, error: str, status_code: int | None, deadline: float) -> bool:
        """After a counted failure: True after waiting to call again, False once the job has failed."""
        attempts = await self._note(job, 1, error)
        settings = self.settings
        if attempts >= settings.max_attempts:
            await self._finish_failed(job, f"{error} (gave up after {attempts} attempts)", status_code)
            return False
        logger.warning("job %s: %s; retrying", job.id, error)
        await self._sleep(backoff_s(attempts, settings.retry_base_s, settings.retry_max_s), deadline)
        return True

    @staticmethod
    async def _sleep(delay_s: float, deadline: float) -> None:
        await asyncio.sleep(max(0.0, min(delay_s, deadline - time.monotonic())))

    async def _finish_succeeded(self, job: Job, response: httpx.Response) -> None:
        try:
            body = await asyncio.to_thread(response.json)
            prediction = body["predictions"][0]
            if not isinstance(prediction, dict) or not isinstance(prediction.get("audio"), str):
                raise TypeError("the prediction has no base64 `audio` string")
            audio = prediction["audio"]
            chunks = prediction.get("chunks")
            if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 0:
                chunks = None  # an older model server, or garbage: keep the last progress read
        except (ValueError, KeyError, IndexError, TypeError) as error:
            await self._finish_failed(job, f"the model answered 200 without a prediction ({error!r})", 200)
            return
        token = None
        if _decoded_size(audio) > self.settings.inline_audio_max_bytes:
            token = secrets.token_urlsafe(32)
        await asyncio.to_thread(
            self.store.finish,
            job.id,
            "succeeded",
            prediction,
            None,
            200,
            token,
            self.settings.download_ttl_s,
            chunks,
        )
        logger.info("job %s succeeded", job.id)
        self.on_finished()

    async def _finish_failed(self, job: Job, error: str, status_code: int | None) -> None:
        failure = JobFailure(error=error, status_code=status_code).model_dump()
        await asyncio.to_thread(self.store.finish, job.id, "failed", failure, error, status_code)
        logger.warning("job %s failed: %s", job.id, error)
        self.on_finished()


def _error_message(response: httpx.Response) -> str:
    """The model server's own words: KServe answers `{"error": "..."}`."""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return str(body["error"])
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])
    except ValueError:
        pass
    return response.text[:500] or f"HTTP {response.status_code}"


def _decoded_size(audio_base64: str) -> int:
    return len(audio_base64) * 3 // 4 - audio_base64[-2:].count("=")


def decode_audio(audio_base64: str) -> bytes:
    return base64.b64decode(audio_base64)
