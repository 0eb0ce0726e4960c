"""HTTP wiring of the job API (the logic lives in service.py, the wire format in protocol.py).

Routes: `POST /async_predict` (the original API's body), `POST /` (a CloudEvent, binary or structured
mode, as a Knative Trigger sends it), `GET /jobs/{id}`, `DELETE /jobs/{id}` (cancel),
`GET /downloads/{token}`, and the open
`/healthz`, `/readyz`, `/metrics`. Every error is one of the error table's types
(`bark_common.errors`), answered in one place as `{"error": "..."}` with the row's status.

A job belongs to the key that created it (auth.py): another key gets 404 on every route, as for an
unknown job. Intake applies the model server's limits (limits.py) and the caps on unfinished jobs
(429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from bark_common.api_keys import presented_key
from bark_common.errors import (
    BodyTooLarge,
    Conflict,
    Gone,
    InvalidInput,
    NotFound,
    ServingError,
    TooManyRequests,
    Unavailable,
)
from bark_common.formats import content_type
from bark_common.schema import invalid_input_from

from .auth import Caller, authenticated_key, principal
from .captions import job_captions
from .config import Settings
from .delivery import DEFAULT_EVENT_SOURCE, iso_time
from .jobs import DELIVERABLE, Job, QueueFull, StoreUnavailable
from .protocol import EVENT_ACCEPTED, AsyncPredictRequest, JobAccepted, JobProgress, JobStatus
from .service import JobService, request_hash
from .urls import UnsafeUrl, check_webhook_url_async

logger = logging.getLogger("webhook_sidecar")
IDEMPOTENCY_HEADER = "idempotency-key"
#: The owner of jobs that keyless CloudEvents created (a Trigger sends no key): only admin keys read them.
CLOUDEVENTS_OWNER = "cloudevents"
_MAX_IDEMPOTENCY_KEY_CHARS = 255
_RETRY_AFTER_S = 5


def error_response(error: ServingError) -> JSONResponse:
    """The sidecar's wire format of the error table: `{"error": message}`, the row's status."""
    return JSONResponse({"error": str(error)}, status_code=error.description.status, headers=error.http_headers())


def create_app(settings: Settings) -> FastAPI:
    service = JobService(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="bark-kserve job sidecar", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, error: ServingError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, error: StoreUnavailable) -> JSONResponse:
        # The database restarting or failing over: the client retries (the idempotency key makes it safe).
        # The database's own message stays in the log.
        logger.warning("answering 503: %s", error)
        return error_response(Unavailable("the job store is unavailable; retry shortly", _RETRY_AFTER_S))

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, error: QueueFull) -> JSONResponse:
        retry_after = service.settings.queue_full_retry_after_s
        return error_response(TooManyRequests(f"too many unfinished jobs: {error}; retry later", retry_after))

    @app.post("/async_predict", status_code=202, tags=["jobs"])
    async def async_predict(request: Request) -> Response:
        """Queue a synthesis job; its result is POSTed to `webhook_endpoint` as a CloudEvent."""
        caller = _authenticate(service, request)
        _refuse_when_draining(service)
        body = await _read_json(request, service.settings.max_body_bytes)
        job_request = await _validate(body, service)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY_CHARS:
            raise InvalidInput(
                f"Idempotency-Key: must be 1 to {_MAX_IDEMPOTENCY_KEY_CHARS} characters", param="Idempotency-Key"
            )
        scoped = _scoped_key(caller, "http", key) if key else None
        job, created = await service.submit(job_request, _public_base(service, request), scoped, service.owner(caller))
        if not created and job.request_hash != request_hash(job_request):
            raise Conflict("Idempotency-Key: already used for a different request body")
        accepted = _accepted(job)
        headers = {"location": accepted.status_url}
        if not created:
            headers["idempotent-replayed"] = "true"
        return JSONResponse(accepted.model_dump(), status_code=202, headers=headers)

    @app.post("/", status_code=202, tags=["jobs"])
    async def cloudevent_intake(request: Request) -> Response:
        """A `com.barkkserve.tts.requested` CloudEvent whose data is the `/async_predict` body.

        Deduplicated on the event's `source` + `id` (brokers redeliver). The answer is a 202 whose body
        is itself a binary-mode CloudEvent (`com.barkkserve.tts.accepted`): Knative rejects non-empty
        replies that are not CloudEvents.
        """
        keyless = not service.settings.cloudevents_require_key
        caller = None if keyless else _authenticate(service, request)
        _refuse_when_draining(service)
        raw = await _read_body(request, service.settings.max_body_bytes)
        try:
            event = from_http(dict(request.headers), raw)
        except CloudEventError as error:
            raise InvalidInput(f"not a CloudEvent: {error}", param=None) from None
        event_type = event["type"]
        if event_type != service.settings.request_event_type:
            raise InvalidInput(
                f"type: expected {service.settings.request_event_type!r}, got {event_type!r}", param="type"
            )
        job_request = await _validate(_event_data(event), service)
        scoped = _scoped_key(caller, "cloudevent", f"{event['source']}\n{event['id']}")
        owner = CLOUDEVENTS_OWNER if keyless and service.api_keys else service.owner(caller)
        job, _created = await service.submit(job_request, _public_base(service, request), scoped, owner)
        accepted = _accepted(job)
        reply = CloudEvent(
            {
                "type": EVENT_ACCEPTED,
                "source": service.settings.event_source or DEFAULT_EVENT_SOURCE,
                "id": f"{job.id}.accepted",
                "subject": job.id,
                "datacontenttype": "application/json",
            },
            accepted.model_dump(),
        )
        headers, content = to_binary(reply)
        headers["location"] = accepted.status_url
        return Response(content, status_code=202, headers=headers)

    @app.get("/jobs/{job_id}", response_model=JobStatus, tags=["jobs"])
    async def job_status(job_id: str, request: Request) -> JobStatus:
        """State, attempts, timestamps and the last error of one job (never its audio)."""
        job = await _get_job(service, job_id, _caller(service, request))
        return _status(job)

    @app.delete(
        "/jobs/{job_id}",
        response_model=JobStatus,
        tags=["jobs"],
        responses={202: {"model": JobStatus, "description": "running: it stops within about a second"}},
    )
    async def cancel_job(job_id: str, request: Request) -> JSONResponse:
        """Cancel a job: queued (or already cancelled) -> `cancelled`, 200; running (on any replica) -> 202,
        `cancel_requested` set, and it ends `cancelled` once its sidecar stopped the model call. A cancelled
        job is never delivered. A finished job cannot be cancelled: 409."""
        await _get_job(service, job_id, _caller(service, request))  # 404 unless it is the caller's
        job = await service.cancel(job_id)
        if job is None:
            raise NotFound("no job with this id")
        if job.state == "running":
            return JSONResponse(_status(job).model_dump(), status_code=202)
        if job.state == "cancelled":
            return JSONResponse(_status(job).model_dump(), status_code=200)
        raise _not_cancellable(job)

    @app.get("/jobs/{job_id}/captions", tags=["jobs"], response_class=Response)
    async def captions(job_id: str, request: Request) -> Response:
        """A finished job's captions as an SRT or WebVTT file, when its model_input asked for them."""
        job = await _get_job(service, job_id, _caller(service, request), with_result=True)
        file = job_captions(job)
        disposition = f'inline; filename="{file.filename}"'
        return Response(file.text, media_type=file.media_type, headers={"content-disposition": disposition})

    @app.get("/downloads/{token}", tags=["jobs"])
    async def download(token: str, request: Request) -> Response:
        """Audio too large to deliver inline, streamed from the store a chunk at a time. The unguessable,
        expiring token is the credential (receivers hold no API key), like a presigned URL; a request
        that presents an API key must present the job's own (or an admin key), else 404."""
        if not service.started:
            raise Unavailable("starting", _RETRY_AFTER_S)
        job = await asyncio.to_thread(service.store.get_by_download_token, token)
        if job is None or (presents_key(request) and not _caller(service, request).may_see(job.owner)):
            raise NotFound("no download with this token")
        if (job.download_expires_at or 0) < time.time() or job.result is None or job.audio_bytes is None:
            raise Gone("this download link has expired")
        audio_format = str(job.result.get("format", "wav"))
        return StreamingResponse(
            service.store.read_audio(job.id),  # a sync iterator: Starlette reads it in a thread
            media_type=content_type(audio_format),
            headers={
                "content-length": str(job.audio_bytes),
                "content-disposition": f'attachment; filename="{job.id}.{audio_format}"',
                "cache-control": "private, no-store",
            },
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process serves HTTP (a drain is not a reason to restart it)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: the store is open and the sidecar is not draining."""
        if service.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "draining" if service.draining else "starting"}, status_code=503)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


# -- helpers ---------------------------------------------------------------------------------------


def _authenticate(service: JobService, request: Request) -> str | None:
    """The matching key (None when auth is off); Unauthorized (401) naming both accepted headers otherwise."""
    return authenticated_key(request.headers, service.api_keys + service.admin_keys)


def _caller(service: JobService, request: Request) -> Caller:
    key = _authenticate(service, request)
    return Caller(owner=service.owner(key), admin=key is not None and key in service.admin_keys)


def presents_key(request: Request) -> bool:
    return presented_key(dict(request.headers)) is not None


def _refuse_when_draining(service: JobService) -> None:
    if not service.ready:
        reason = "shutting down" if service.draining else "starting"
        raise Unavailable(f"not taking jobs: {reason}; retry shortly", _RETRY_AFTER_S)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known or seen to exceed `limit`.

    A declared Content-Length is checked first; a chunked body (no length) is counted while it
    streams in, so a client cannot make us buffer more than `limit` bytes.
    """
    too_large = BodyTooLarge(f"body: larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _read_json(request: Request, limit: int) -> Any:
    raw = await _read_body(request, limit)
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidInput("body: not valid JSON", param=None) from None


def _event_data(event: CloudEvent) -> Any:
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            return json.loads(data)
        except ValueError:
            raise InvalidInput("data: not valid JSON", param="data") from None
    return data


async def _validate(body: Any, service: JobService) -> AsyncPredictRequest:
    """Schema first (400 naming the field), then the webhook address (400 saying why it is refused)."""
    try:
        job_request = AsyncPredictRequest.model_validate(body)
    except ValidationError as error:
        raise invalid_input_from(error) from None
    try:
        await check_webhook_url_async(job_request.webhook_endpoint, service.allowlist)
    except UnsafeUrl as error:
        raise InvalidInput(str(error), param="webhook_endpoint") from None
    return job_request


def _scoped_key(caller: str | None, kind: str, value: str) -> str:
    """Idempotency keys are per caller: another key holder reusing a key gets its own job, not ours."""
    return f"{principal(caller)}:{kind}:{hashlib.sha256(value.encode()).hexdigest()}"


def _public_base(service: JobService, request: Request) -> str:
    return (service.settings.public_url or str(request.base_url)).rstrip("/")


def _accepted(job: Job) -> JobAccepted:
    return JobAccepted(job_id=job.id, status_url=f"{job.public_base}/jobs/{job.id}")


async def _get_job(service: JobService, job_id: str, caller: Caller, with_result: bool = False) -> Job:
    """The job, if this caller may see it: another key's job is a 404 like an unknown one."""
    job = await asyncio.to_thread(service.store.get, job_id, with_result)
    if job is None or not caller.may_see(job.owner):
        raise NotFound("no job with this id")
    return job


def _not_cancellable(job: Job) -> ServingError:
    """Why a job that is neither queued nor running cannot be cancelled (409), in the caller's terms."""
    if job.state == "delivered":
        return Conflict("job already finished and its result was delivered; nothing to cancel")
    if job.state == "dead":
        return Conflict("job already finished and its delivery gave up (state dead); nothing to cancel")
    if job.state in DELIVERABLE:
        return Conflict(f"job already finished ({job.outcome}) and its result is being delivered; too late to cancel")
    # Still queued: it moved between every attempt to cancel it (claimed, handed back): try again.
    return Unavailable("the job changed state while being cancelled; retry", 1)


def _status(job: Job) -> JobStatus:
    def when(value: float | None) -> str | None:
        return iso_time(value) if value is not None else None

    waiting = job.state in DELIVERABLE and not job.in_flight
    progress = None
    if job.chunks_done is not None and job.chunks_total is not None:
        progress = JobProgress(chunks_done=job.chunks_done, chunks_total=job.chunks_total)
    return JobStatus(
        job_id=job.id,
        state=job.state,
        outcome=job.outcome,
        error=job.error,
        attempts=job.attempts,
        delivery_attempts=job.delivery_attempts,
        created_at=iso_time(job.created_at),
        started_at=when(job.started_at),
        finished_at=when(job.finished_at),
        delivered_at=when(job.delivered_at),
        next_attempt_at=when(job.next_attempt_at) if waiting else None,
        last_error=job.last_error,
        last_status_code=job.last_status_code,
        webhook_host=urlsplit(job.webhook_endpoint).hostname or "",
        progress=progress,
        cancel_requested=job.cancel_requested_at is not None,
    )
