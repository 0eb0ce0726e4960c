"""Delivers a job's result: a structured-mode CloudEvent POSTed to its webhook, signed, retried.

- The CloudEvent `id` and the `webhook-id` header are the job id, and the body is built from stored
  data only, so every retry (and a redelivery after a crash) is the same message: receivers dedupe on
  `webhook-id`. Only `webhook-timestamp` and the signature change per attempt.
- Structured mode (`application/cloudevents+json`): the attributes are in the body, under the signature.
- 2xx: delivered. Network errors, timeouts, 408, 429 and 5xx: retried with exponential back-off and
  jitter (Retry-After honoured) up to `max_attempts`, then `dead`. Any other status (3xx: redirects
  are not followed; 4xx): final, `dead`.
- The address is checked again and the connection pinned to it (see urls.py). Connections are kept
  per hostname (connections.py): a TLS session verified for one receiver's name never carries another
  receiver's payload, even when both names resolve to one address.
- One signature per configured secret (`webhook-signature: v1,<a> v1,<b>`): rotating the secret is
  adding the new one beside the old, then dropping the old once receivers verify with the new one.
- The audio comes from the store only when it is delivered inline (at most `inline_audio_max_bytes`);
  larger audio is a download link, and a delivery never loads it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import datetime, timezone
from typing import Any

import httpx
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from .config import Settings
from .connections import WebhookClients
from .jobs import Job
from .leases import until_landed
from .metrics import SidecarMetrics
from .protocol import EVENT_COMPLETED, EVENT_FAILED
from .retry import backoff_s, parse_retry_after
from .signing import signature_headers
from .store_base import Store
from .urls import Allowlist, UnresolvableHost, UnsafeUrl, check_webhook_url_async

logger = logging.getLogger("webhook_sidecar.delivery")

DEFAULT_EVENT_SOURCE = "urn:bark-kserve:webhook-sidecar"
USER_AGENT = "bark-kserve-webhook/0.1"
_RETRYABLE_STATUS = (408, 429)
_ERROR_BODY_CHARS = 300


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def event_data(job: Job, audio: bytes | None) -> dict[str, Any]:
    """The prediction (or the failure): `audio` inline as base64, or a link to `/downloads/{token}`."""
    assert job.result is not None, "deliverable jobs carry a result"
    data = dict(job.result)
    if job.outcome == "succeeded" and job.download_token is not None:
        data["audio_url"] = f"{job.public_base}/downloads/{job.download_token}"
        data["audio_url_expires_at"] = iso_time(job.download_expires_at or 0.0)
        data["audio_bytes"] = job.audio_bytes
    elif audio is not None:
        data = {"audio": base64.b64encode(audio).decode(), **data}
    return data


def inline_audio(store: Store, job: Job) -> bytes | None:
    """The audio a delivery carries inline (bounded by inline_audio_max_bytes); None for a link or a failure."""
    if job.outcome != "succeeded" or job.download_token is not None or job.audio_bytes is None:
        return None
    return b"".join(store.read_audio(job.id))


def build_event(job: Job, audio: bytes | None, source: str = DEFAULT_EVENT_SOURCE) -> CloudEvent:
    attributes = {
        "type": EVENT_COMPLETED if job.outcome == "succeeded" else EVENT_FAILED,
        "source": source,
        "id": job.id,
        "subject": job.id,
        "time": iso_time(job.finished_at or job.updated_at),
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes, event_data(job, audio))


def encode_delivery(
    job: Job, audio: bytes | None, secrets: tuple[str, ...], source: str, timestamp: int | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body of one delivery attempt: the structured CloudEvent plus signature headers."""
    headers, body = to_structured(build_event(job, audio, source))
    headers.update(signature_headers(secrets, job.id, body, timestamp))
    headers["user-agent"] = USER_AGENT
    return headers, body


class Deliverer:
    """Makes one delivery attempt for a claimed (`delivering`) job and records what it led to."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: SidecarMetrics,
        clients: WebhookClients,
        allowlist: Allowlist,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clients = clients
        self.allowlist = allowlist
        self.secrets = settings.webhook_secrets()
        self.source = settings.event_source or DEFAULT_EVENT_SOURCE

    async def deliver(self, job: Job) -> None:
        """One attempt. Cancelled (shutdown, a lost lease), it writes nothing: `release_all` or the
        lapsed lease hands the job back, and the redelivery is the same message."""
        if job.delivery_attempts > self.settings.max_attempts:  # only after repeated internal errors
            await until_landed(self.store.mark_dead, job.id, "gave up: too many attempts", None)
            return
        try:
            target = await check_webhook_url_async(job.webhook_endpoint, self.allowlist)
        except UnresolvableHost as error:
            await self._retry(job, str(error), None, None)
            return
        except UnsafeUrl as error:
            self.metrics.delivery_attempts.labels("blocked").inc()
            await until_landed(self.store.mark_dead, job.id, f"refused at delivery: {error}", None)
            logger.warning("job %s: webhook refused at delivery: %s", job.id, error)
            return

        headers, body = await asyncio.to_thread(self._encode, job)
        original = httpx.URL(job.webhook_endpoint)
        # Connect to the address we checked; the server still sees its name (Host, TLS SNI).
        address = target.addresses[(job.delivery_attempts - 1) % len(target.addresses)]
        headers["host"] = original.netloc.decode("ascii")
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            # httpx's timeout is per read; wait_for bounds the whole exchange (a receiver trickling bytes).
            status, retry_after, snippet = await asyncio.wait_for(
                self._post(
                    self.clients.for_target(target), original.copy_with(host=str(address)), headers, body, extensions
                ),
                self.settings.delivery_timeout_s,
            )
        except (httpx.TimeoutException, asyncio.TimeoutError):
            timeout = f"webhook did not answer within {self.settings.delivery_timeout_s:g} s"
            await self._retry(job, timeout, None, None)
            return
        except httpx.TransportError as error:
            await self._retry(job, f"webhook unreachable: {error!r}", None, None)
            return

        if 200 <= status < 300:
            await until_landed(self.store.mark_delivered, job.id, status)
            self.metrics.delivery_attempts.labels("delivered").inc()
            self.metrics.delivery_latency.observe(max(0.0, time.time() - (job.finished_at or time.time())))
            logger.info("job %s delivered (%d, attempt %d)", job.id, status, job.delivery_attempts)
            return
        problem = f"webhook answered {status}: {snippet}".rstrip(": ")
        if 300 <= status < 400:
            problem += " (redirects are not followed)"
        if status in _RETRYABLE_STATUS or status >= 500:
            await self._retry(job, problem, status, parse_retry_after(retry_after))
            return
        self.metrics.delivery_attempts.labels("rejected").inc()
        await until_landed(self.store.mark_dead, job.id, f"{problem} (final: not retried)", status)
        logger.warning("job %s: %s; final", job.id, problem)

    def _encode(self, job: Job) -> tuple[dict[str, str], bytes]:
        return encode_delivery(job, inline_audio(self.store, job), self.secrets, self.source)

    async def _post(
        self,
        client: httpx.AsyncClient,
        url: httpx.URL,
        headers: dict[str, str],
        body: bytes,
        extensions: dict[str, str],
    ) -> tuple[int, str | None, str]:
        """POST; the status, Retry-After and the start of the answer (the rest is never read)."""
        async with client.stream(
            "POST",
            url,
            content=body,
            headers=headers,
            extensions=extensions,
            timeout=self.settings.delivery_timeout_s,
        ) as response:
            snippet = await _read_some(response)
            return response.status_code, response.headers.get("retry-after"), snippet

    async def _retry(self, job: Job, error: str, status: int | None, retry_after: float | None) -> None:
        settings = self.settings
        if job.delivery_attempts >= settings.max_attempts:
            self.metrics.delivery_attempts.labels("gave_up").inc()
            final = f"{error} (gave up after {job.delivery_attempts} attempts)"
            await until_landed(self.store.mark_dead, job.id, final, status)
            logger.warning("job %s: %s", job.id, final)
            return
        delay = backoff_s(job.delivery_attempts, settings.retry_base_s, settings.retry_max_s)
        if retry_after is not None:
            delay = max(delay, min(retry_after, settings.retry_max_s))
        self.metrics.delivery_attempts.labels("retry").inc()
        await until_landed(self.store.schedule_retry, job.id, delay, error, status)
        logger.info("job %s: %s; retry in %.2f s", job.id, error, delay)


async def _read_some(response: httpx.Response) -> str:
    """The start of the receiver's answer, for last_error; the rest is not read into memory."""
    collected = b""
    async for chunk in response.aiter_bytes():
        collected += chunk
        if len(collected) >= _ERROR_BODY_CHARS:
            break
    return collected[:_ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
