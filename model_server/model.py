"""BarkTTS: the kserve.Model that turns v1 predict requests into audio.

A thin KServe adapter over the synthesis service (synthesis.py), which owns the engine and the
scheduler. load: build the service; preprocess: validate the body (schema.py); predict: have the
service plan, check and synthesize every instance; then encode and base64 the waveforms.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from typing import Any

import orjson
from kserve import Model
from kserve.errors import InvalidInput as KServeInvalidInput

from bark_common.errors import (
    CANCELLED,
    GENERATION_ERROR,
    INVALID_INPUT,
    OK,
    ErrorDescription,
    GenerationFailed,
    InvalidInput,
    RequestTimedOut,
    ServingError,
)
from model_server import metrics
from model_server.config import Settings
from model_server.paths import V1_PREDICT_ROUTE
from model_server.request_outcome import note_reason
from model_server.schema import SynthesisRequest, SynthesisResult, parse_predict_body
from model_server.synthesis import Synthesis, SynthesisPlan, SynthesisService

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("bark.requests")


class V1InvalidInput(KServeInvalidInput, InvalidInput):
    """Our InvalidInput on KServe's v1 wire: KServe answers it as its own (400, `{"error": message}`)."""

    def __init__(self, error: InvalidInput):
        KServeInvalidInput.__init__(self, str(error))
        self.param = error.param


class BarkTTS(Model):
    """KServe model: Bark text-to-speech with sentence chunking and cross-request batching."""

    def __init__(self, settings: Settings, service: SynthesisService | None = None):
        """`service`: one already built (tests, over a stand-in engine); otherwise load() builds it."""
        super().__init__(settings.model_name)
        self.settings = settings
        self._service = service
        self.stopped = False  # set by stop() (SIGTERM): never load again in this process

    # -- lifecycle -----------------------------------------------------------------------------
    def load(self) -> bool:
        """Load weights and run a warm-up generation; only then is the model ready."""
        if self.stopped:
            # KServe's DataPlane.get_model() calls load() on a model that is not ready: a request
            # that passed the readiness check just before SIGTERM must not reload Bark mid-drain.
            return False
        started = time.perf_counter()
        self._service = SynthesisService.load(self.settings, on_fatal=self.device_failed)
        engine = self._service.engine
        metrics.MODEL_LOAD_SECONDS.set(time.perf_counter() - started)
        metrics.MODEL_INFO.labels(
            source=engine.source,
            device=str(engine.device),
            dtype=str(engine.dtype).removeprefix("torch."),
            attention=engine.attention,
            decoder=engine.decoder_name,
            decoder_fallback=engine.decoder_fallback or "none",
        ).set(1)
        metrics.track_gpu_memory()
        self.ready = True
        return self.ready

    def start(self) -> None:
        """KServe's default start() marks any model ready; ours is ready only after load()."""

    def stop(self) -> None:
        """Not ready from now on (SIGTERM, or KServe unloading); requests already running go on."""
        self.stopped = True
        self.ready = False

    def device_failed(self, error: BaseException) -> None:
        """The device failed for good (faults.is_fatal_device_error; called from the decoding thread).

        Every later kernel of this process would fail too, so the pod must restart: not ready at once
        (no new traffic; the scheduler already failed what it held and refuses the rest), then a
        SIGTERM to ourselves, which drains the server as a rollout would and exits; Kubernetes starts
        a new container. Failing every batch forever behind a green readiness probe is the outcome
        this prevents.
        """
        logger.critical("device failed (%r): turning not ready and exiting for a restart", error)
        self.stop()
        os.kill(os.getpid(), signal.SIGTERM)

    @property
    def service(self) -> SynthesisService:
        """The synthesis service the routes speak to; there is none before load()."""
        if self._service is None:
            raise RuntimeError("the model is not loaded")
        return self._service

    # -- the request side ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.service.sample_rate

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> list[SynthesisRequest]:
        if isinstance(payload, bytes | bytearray):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"body is not valid JSON: {error}", param=None) from None
        return parse_predict_body(payload, self.settings)

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None) -> Any:
        """One request id for logs and errors; a log line for every outcome (outcomes.py counts them)."""
        outcome: ErrorDescription = OK
        started = time.perf_counter()
        # One id for the log lines and the error body; predict() reads it from the same headers.
        request_id = (headers or {}).get("x-request-id") or uuid.uuid4().hex
        headers = {**(headers or {}), "x-request-id": request_id}
        try:
            if verb is None:
                return await super().__call__(body, headers=headers)
            return await super().__call__(body, headers=headers, verb=verb)
        except KServeInvalidInput:  # KServe's own checks of the body
            outcome = INVALID_INPUT
            raise
        except InvalidInput as error:
            # KServe answers its own InvalidInput: the same 400 `{"error": message}` as ever.
            outcome = INVALID_INPUT
            raise V1InvalidInput(error) from error
        except ServingError as error:  # Overloaded, a timeout, a voice's 403/409, ...
            outcome = error.description  # http/errors.py answers them
            raise
        except asyncio.CancelledError:
            outcome = CANCELLED
            raise
        except Exception as error:
            outcome = GENERATION_ERROR
            # Only this request fails; its id in the 500 body finds the traceback in the log.
            logger.exception("request %s failed", request_id)
            raise GenerationFailed(str(error) or type(error).__name__, request_id) from error
        finally:
            note_reason(outcome.reason)
            if outcome is not OK:
                fields = {
                    "request_id": request_id,
                    "code": outcome.status,
                    "reason": outcome.reason,
                    "wall_s": round(time.perf_counter() - started, 3),
                }
                request_logger.info("synthesis failed", extra={"fields": fields})

    async def predict(self, instances: list[SynthesisRequest], headers: dict[str, str] | None = None) -> dict[str, Any]:
        request_id = (headers or {}).get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        timeout = self.settings.request_timeout_s
        # Planned up front so that the whole request's estimated audio is checked before any chunk queues;
        # in a worker thread, since splitting a long text takes a while (0.25 s for 20,000 characters)
        # and the event loop meanwhile serves every other request.
        service = self.service
        caller = service.callers.of(headers or {})

        def plan_all() -> tuple[list[SynthesisRequest], list[SynthesisPlan]]:
            # Every instance's voices first (their 400s before any planning's), then the plans.
            requests = [service.resolve_voices(item, f"instances[{i}]", caller) for i, item in enumerate(instances)]
            plans = [service.plan(item, where=f"instances[{i}]", caller=caller) for i, item in enumerate(requests)]
            service.check_output(chunk for plan in plans for chunk in plan.chunks)
            return requests, plans

        payload, plans = await asyncio.to_thread(plan_all)
        try:
            pairs = zip(payload, plans, strict=True)
            work = (service.synthesize(instance, plan, request_id) for instance, plan in pairs)
            results = await asyncio.wait_for(asyncio.gather(*work), timeout)
        except asyncio.TimeoutError:
            raise RequestTimedOut.after(timeout) from None
        predictions = await asyncio.to_thread(self._encode_all, payload, results)
        wall = time.perf_counter() - started
        audio_seconds = sum(prediction.duration_s for prediction in predictions)
        chunks = sum(prediction.chunks for prediction in predictions)
        service.record_success(V1_PREDICT_ROUTE, request_id, payload, chunks, wall, audio_seconds)
        # Segments and captions only where asked: the prediction of a plain request keeps its shape.
        return {"predictions": [prediction.model_dump(exclude_none=True) for prediction in predictions]}

    def _encode_all(self, requests: list[SynthesisRequest], results: list[Synthesis]) -> list[SynthesisResult]:
        started = time.perf_counter()
        service = self.service
        pairs = zip(requests, results, strict=True)
        predictions = [service.result(request, result, request.format) for request, result in pairs]
        metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - started)
        return predictions
