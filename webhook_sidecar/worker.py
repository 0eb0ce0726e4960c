"""Runs jobs: one model call per job (`{"instances": [model_input]}`) against the model server.

What the model's answer means for the job:
- 200: `succeeded`; the audio is stored as its encoded bytes (base64-decoded once, the answer's JSON
  dropped at once) and the rest of the prediction as JSON, in one write that also counts the attempt.
  An answer over `max_result_bytes` of audio is refused while it streams in: `failed`, never an OOM.
- no connection, 503 or 429 (the model is down, loading or full): the job is handed back at once, not
  counted as an attempt, for a replica whose model can take it (readiness.py closes this sidecar's gate
  for Retry-After or a back-off); after `max_attempts` hand-backs it fails.
Every other answered call counts as an attempt, and so does a call cut short by a crash (`recover`
counts it), so a job that keeps killing the sidecar gives up after `max_attempts` restarts.
- other 5xx or a dropped connection: counted; retried with back-off up to `max_attempts`.
- 4xx (400: a bound the model server checks, e.g. prompt length): `failed` with its message.
- no answer within the job timeout: `failed` (Bark may be stuck; a retry would double the load).
A `failed` job is delivered as a `.failed` CloudEvent like any result.
- the caller cancelled it (`DELETE /jobs/{id}`, any replica): the run is stopped within
  `cancel_poll_s` (cancellation.py), the model call aborted, and the job ends `cancelled`, never
  delivered; the aborted call is not counted.
- the lease is lost (leases.py): the task is cancelled and nothing more is written; the job is another
  replica's now. Shutdown cancels it the same way and `release_all` hands the job back.

Every store write goes through `until_landed` (retried while the database restarts). Every call carries
the job id as `x-request-id` (the model server's logs and its progress route use it); while a call is
in flight, progress.py reads the model's progress into the job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from .cancellation import JobCancelled, unless_cancelled
from .config import Settings
from .jobs import Job, StaleJob
from .leases import until_landed
from .progress import progress_url, watching_progress
from .protocol import JobFailure
from .readiness import ModelGate
from .retry import backoff_s, parse_retry_after
from .store_base import Store

logger = logging.getLogger("webhook_sidecar.worker")

_BUSY = (429, 503)
#: An error answer is read this far (its message); the rest is not read into memory.
_ERROR_BODY_BYTES = 64 * 1024
#: Room for the prediction's other fields (segments, captions) beside its base64 audio.
_ANSWER_OVERHEAD_BYTES = 8 * 1024 * 1024


class ResultTooLarge(Exception):
    """The model's answer holds more audio than `max_result_bytes`."""


@dataclass
class ModelAnswer:
    status: int
    retry_after: str | None
    #: Mutable, so the parser can free it as soon as it has read it (a 10-minute answer is 38 MB).
    body: bytearray


class JobRunner:
    """Turns one claimed (`running`) job into `succeeded` or `failed`, or hands it back."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        client: httpx.AsyncClient,
        model_headers: dict[str, str] | None = None,
        on_finished: Callable[[], None] = lambda: None,
        gate: ModelGate | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.client = client
        self.headers = model_headers or {}
        self.on_finished = on_finished
        self.gate = gate

    async def run(self, job: Job) -> None:
        try:
            if job.cancel_requested_at is None:  # else a handed-back run its caller cancelled meanwhile
                await unless_cancelled(self._run(job), lambda: self._cancel_requested(job), self.settings.cancel_poll_s)
                return
        except JobCancelled:
            pass
        await self._finish_cancelled(job)

    async def _cancel_requested(self, job: Job) -> bool:
        return await asyncio.to_thread(self.store.cancel_requested, job.id)

    async def _finish_cancelled(self, job: Job) -> None:
        try:
            await until_landed(self.store.mark_cancelled, job.id)
        except StaleJob as error:  # its result was stored while the cancel arrived: it is delivered
            logger.info("job %s: cancelled too late: %s", job.id, error)
            return
        logger.info("job %s cancelled by its caller", job.id)

    async def _run(self, job: Job) -> None:
        settings = self.settings
        deadline = time.monotonic() + settings.job_timeout_s
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
                    answer = await asyncio.wait_for(self._call(job, remaining), remaining)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                await self._hand_back(job, f"model server unreachable: {error!r}", None)
                return
            except (httpx.TimeoutException, asyncio.TimeoutError):
                timeout = f"the model did not answer within the job timeout ({settings.job_timeout_s:g} s)"
                await self._finish_failed(job, timeout, None, counted=True)
                return
            except httpx.TransportError as error:
                if await self._retry_counted(job, f"model call broke off: {error!r}", None, deadline):
                    continue
                return
            except ResultTooLarge as error:
                await self._finish_failed(job, str(error), 200, counted=True)
                return

            status = answer.status
            if status in _BUSY:
                problem = f"model busy ({status}): {_error_message(answer)}"
                await self._hand_back(job, problem, parse_retry_after(answer.retry_after))
                return
            if status >= 500:
                problem = f"model error ({status}): {_error_message(answer)}"
                if await self._retry_counted(job, problem, status, deadline):
                    continue
                return
            if self.gate is not None:
                self.gate.succeeded()
            if status == 200:
                await self._finish_succeeded(job, answer)
            else:
                await self._finish_failed(job, _error_message(answer), status, counted=True)
            return

    async def _call(self, job: Job, remaining: float) -> ModelAnswer:
        """POST the job and read the answer, streamed: refused once it is larger than a result may be."""
        limit = self.settings.max_result_bytes * 4 // 3 + _ANSWER_OVERHEAD_BYTES
        async with self.client.stream(
            "POST",
            self.settings.model_url,
            content=orjson.dumps({"instances": [job.model_input]}),
            headers={**self.headers, "content-type": "application/json", "x-request-id": job.id},
            timeout=httpx.Timeout(remaining, connect=min(remaining, 10.0)),
        ) as response:
            if response.status_code != 200:
                limit = _ERROR_BODY_BYTES
            body = bytearray()
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > limit:
                    if response.status_code != 200:
                        break
                    raise ResultTooLarge(
                        f"the model's answer is larger than max_result_bytes ({self.settings.max_result_bytes} bytes "
                        "of audio): ask for less audio, or a compressed format"
                    )
            return ModelAnswer(response.status_code, response.headers.get("retry-after"), body)

    def _watching_progress(self, job: Job) -> contextlib.AbstractAsyncContextManager[None]:
        url = progress_url(self.settings.model_url, job.id)
        return watching_progress(self.store, self.client, url, job.id, self.headers, self.settings.progress_poll_s)

    async def _hand_back(self, job: Job, error: str, retry_after_s: float | None) -> None:
        """The model could not take the job: back to the queue for any replica, not counted as an attempt."""
        closed_s = self.gate.close(retry_after_s) if self.gate is not None else 0.0
        handbacks = job.handbacks + 1
        settings = self.settings
        if handbacks >= settings.max_attempts:
            final = f"{error} (no model server could take the job after {handbacks} tries)"
            await self._finish_failed(job, final, None)
            return
        delay = backoff_s(handbacks, settings.retry_base_s, settings.retry_max_s)
        await until_landed(self.store.requeue, job.id, error, delay, True)
        logger.warning(
            "job %s: %s; handed back (due in %.2f s; no claims here for %.2f s)", job.id, error, delay, closed_s
        )

    async def _note(self, job: Job, counted: int, error: str | None = None) -> int:
        """Count an answered model call; keep the error."""
        return await until_landed(self.store.count_attempt, job.id, counted, error)

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

    async def _finish_succeeded(self, job: Job, answer: ModelAnswer) -> None:
        try:
            prediction, audio = await asyncio.to_thread(split_prediction, answer.body)
        except (ValueError, KeyError, IndexError, TypeError) as error:
            await self._finish_failed(
                job, f"the model answered 200 without a prediction ({error!r})", 200, counted=True
            )
            return
        chunks = prediction.get("chunks")
        if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 0:
            chunks = None  # an older model server, or garbage: keep the last progress read
        token = secrets.token_urlsafe(32) if len(audio) > self.settings.inline_audio_max_bytes else None
        await until_landed(
            self.store.finish,
            job.id,
            "succeeded",
            prediction,
            audio,
            None,
            200,
            token,
            self.settings.download_ttl_s,
            chunks,
            True,
        )
        logger.info("job %s succeeded (%d bytes of audio)", job.id, len(audio))
        self.on_finished()

    async def _finish_failed(self, job: Job, error: str, status_code: int | None, counted: bool = False) -> None:
        failure = JobFailure(error=error, status_code=status_code).model_dump()
        await until_landed(self.store.finish, job.id, "failed", failure, None, error, status_code, counted=counted)
        logger.warning("job %s failed: %s", job.id, error)
        self.on_finished()


def split_prediction(body: bytearray) -> tuple[dict[str, Any], bytes]:
    """The first prediction of a v1 answer without its audio, and the audio's bytes (decoded once).
    `body` is emptied once parsed: the answer, its base64 text and the audio are never all in memory."""
    parsed = orjson.loads(body)
    body.clear()
    prediction = parsed["predictions"][0]
    if not isinstance(prediction, dict) or not isinstance(prediction.get("audio"), str):
        raise TypeError("the prediction has no base64 `audio` string")
    audio = base64.b64decode(prediction.pop("audio"), validate=True)
    return prediction, audio


def _error_message(answer: ModelAnswer) -> str:
    """The model server's own words: KServe answers `{"error": "..."}`."""
    try:
        body = orjson.loads(answer.body)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return str(body["error"])
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])
    except orjson.JSONDecodeError:
        pass
    return answer.body[:500].decode("utf-8", "replace") or f"HTTP {answer.status}"
