"""BarkTTS: the kserve.Model that turns v1 predict requests into audio.

preprocess: validate the body (schema.py); predict: split and pack each prompt into chunks, queue
them on the scheduler (chunks of concurrent requests share batches), await the trimmed waveforms;
postprocess: join them with short pauses, encode and base64 them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from kserve import Model
from kserve.errors import InvalidInput as KServeInvalidInput

from model_server import metrics
from model_server.config import Settings
from model_server.errors import (
    CANCELLED,
    GENERATION_ERROR,
    INVALID_INPUT,
    OK,
    ErrorDescription,
    GenerationFailed,
    InvalidInput,
    Overloaded,
    RequestTimedOut,
)
from model_server.generation import audio
from model_server.generation.engine import BarkEngine, Sampling
from model_server.generation.faults import release_cached_memory, run_splitting_on_oom
from model_server.generation.languages import resolve_language
from model_server.generation.limits import check_output_seconds
from model_server.generation.scheduler import BatchFailed, ChunkScheduler, build_scheduler
from model_server.generation.text import plan_chunks, semantic_budget
from model_server.http.outcomes import note_reason
from model_server.paths import V1_PREDICT_ROUTE
from model_server.schema import SynthesisRequest, SynthesisResult, parse_predict_body

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("bark.requests")

BatchKey = tuple[str, Sampling]


@dataclass(frozen=True)
class ChunkPayload:
    text: str
    budget: int


@dataclass
class Synthesis:
    """One finished instance before encoding."""

    waveform: np.ndarray
    chunks: int


class V1InvalidInput(KServeInvalidInput, InvalidInput):
    """Our InvalidInput on KServe's v1 wire: KServe answers it as its own (400, `{"error": message}`)."""

    def __init__(self, error: InvalidInput):
        KServeInvalidInput.__init__(self, str(error))
        self.param = error.param


def sampling_of(request: SynthesisRequest) -> Sampling:
    return Sampling(
        do_sample=request.do_sample,
        semantic_temperature=request.semantic_temperature,
        coarse_temperature=request.coarse_temperature,
        fine_temperature=request.fine_temperature,
        seed=request.seed,
    )


class BarkTTS(Model):
    """KServe model: Bark text-to-speech with sentence chunking and cross-request batching."""

    def __init__(self, settings: Settings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.engine: BarkEngine | None = None  # type: ignore[assignment]
        self.scheduler: ChunkScheduler | None = None
        self.stopped = False  # set by stop() (SIGTERM): never load again in this process

    # -- lifecycle -----------------------------------------------------------------------------
    def load(self) -> bool:
        """Load weights and run a warm-up generation; only then is the model ready."""
        if self.stopped:
            # KServe's DataPlane.get_model() calls load() on a model that is not ready: a request
            # that passed the readiness check just before SIGTERM must not reload Bark mid-drain.
            return False
        started = time.perf_counter()
        engine = BarkEngine(self.settings)
        if self.settings.warmup:
            engine.warm_up()
        self.engine = engine
        self.scheduler = build_scheduler(self.settings, self._run_batch, engine)
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

    # -- the engine side (runs in the scheduler's worker thread) -------------------------------
    def _run_batch(self, key: BatchKey, payloads: list[ChunkPayload]) -> list[np.ndarray]:
        assert self.engine is not None
        engine = self.engine
        voice, sampling = key

        def generate(part: list[ChunkPayload]) -> list[np.ndarray]:
            output = engine.generate_batch(
                [payload.text for payload in part], voice, sampling, [payload.budget for payload in part]
            )
            for stage, seconds in output.stage_seconds.items():
                metrics.STAGE_LATENCY.labels(stage=stage).observe(seconds)
            return output.waveforms

        # An out-of-memory batch runs again as halves (faults.py) before any of its requests fail.
        return run_splitting_on_oom(generate, payloads, lambda: release_cached_memory(engine.device))

    # -- the request side ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        assert self.engine is not None
        return self.engine.sample_rate

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> list[SynthesisRequest]:
        if isinstance(payload, bytes | bytearray):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"body is not valid JSON: {error}") from None
        instances = parse_predict_body(payload, self.settings)
        assert self.engine is not None
        return [
            instance.model_copy(update={"voice": self.engine.voices.resolve(instance.voice, f"instances[{i}].voice")})
            for i, instance in enumerate(instances)
        ]

    def plan_chunks(self, request: SynthesisRequest, first_sentence_alone: bool = False) -> list[ChunkPayload]:
        """Sentences packed into chunks, each with a semantic token budget from its estimated speech."""
        assert self.engine is not None
        settings = self.settings
        started = time.perf_counter()
        language = resolve_language(request.language, request.voice)
        max_words = request.batch_chunk_size or settings.default_chunk_words
        chunks = plan_chunks(request.prompt, max_words, language, first_sentence_alone)
        metrics.STAGE_LATENCY.labels(stage="split").observe(time.perf_counter() - started)
        if not chunks:
            raise InvalidInput("prompt: has no words to speak (no letter or digit in it)")
        per_word, minimum = settings.semantic_tokens_per_word, settings.semantic_tokens_min
        return [
            ChunkPayload(chunk.text, semantic_budget(chunk.seconds, per_word, minimum, self.engine.max_semantic_tokens))
            for chunk in chunks
        ]

    async def synthesize(self, request: SynthesisRequest, chunks: list[ChunkPayload] | None = None) -> Synthesis:
        """Generate one instance's audio: all its chunks batched, trimmed and joined in order."""
        assert self.scheduler is not None
        chunks = self.plan_chunks(request) if chunks is None else chunks
        try:
            parts = await self.scheduler.submit((request.voice, sampling_of(request)), chunks)
        except BatchFailed as error:
            raise RuntimeError(str(error)) from error
        joined = audio.join_with_pauses(parts, self.sample_rate, self.settings.pause_ms)
        return Synthesis(waveform=joined, chunks=len(chunks))

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
        except (Overloaded, RequestTimedOut) as error:
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

    async def predict(self, payload: list[SynthesisRequest], headers: dict[str, str] | None = None) -> dict[str, Any]:
        request_id = (headers or {}).get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        timeout = self.settings.request_timeout_s
        # Planned up front so that the whole request's estimated audio is checked before any chunk queues.
        plans = [self.plan_chunks(instance) for instance in payload]
        check_output_seconds((chunk.budget for plan in plans for chunk in plan), self.settings.max_output_seconds)
        try:
            work = (self.synthesize(instance, plan) for instance, plan in zip(payload, plans, strict=True))
            results = await asyncio.wait_for(asyncio.gather(*work), timeout)
        except asyncio.TimeoutError:
            message = f"request took longer than {timeout:g} s (request_timeout_s); its work was dropped"
            raise RequestTimedOut(message) from None
        predictions = await asyncio.to_thread(self._encode_all, payload, results)
        wall = time.perf_counter() - started
        audio_seconds = sum(prediction.duration_s for prediction in predictions)
        chunks = sum(prediction.chunks for prediction in predictions)
        self.record_success(V1_PREDICT_ROUTE, request_id, payload, chunks, wall, audio_seconds)
        return {"predictions": [prediction.model_dump() for prediction in predictions]}

    def _encode_all(self, requests: list[SynthesisRequest], results: list[Synthesis]) -> list[SynthesisResult]:
        started = time.perf_counter()
        predictions = [
            SynthesisResult(
                audio=audio.encode_base64(result.waveform, self.sample_rate, request.format),
                format=request.format,
                sample_rate=self.sample_rate,
                duration_s=round(len(result.waveform) / self.sample_rate, 4),
                chunks=result.chunks,
            )
            for request, result in zip(requests, results, strict=True)
        ]
        metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - started)
        return predictions

    def record_success(
        self,
        route: str,
        request_id: str,
        requests: list[SynthesisRequest],
        chunks: int,
        wall: float,
        audio_seconds: float,
    ) -> None:
        """Metrics and the one structured log line of a finished request (any route)."""
        metrics.REQUEST_LATENCY.labels(route=route).observe(wall)
        metrics.AUDIO_SECONDS.labels(route=route).inc(audio_seconds)
        if audio_seconds > 0:
            metrics.REAL_TIME_FACTOR.labels(route=route).observe(wall / audio_seconds)
        for request in requests:
            metrics.VOICE_REQUESTS.labels(voice=request.voice).inc()
        fields: dict[str, Any] = {
            "request_id": request_id,
            "route": route,
            "instances": len(requests),
            "chunks": chunks,
            "audio_s": round(audio_seconds, 3),
            "wall_s": round(wall, 3),
            "rtf": round(wall / audio_seconds, 3) if audio_seconds else None,
        }
        if self.settings.log_prompts:
            fields["prompts"] = [request.prompt for request in requests]
        request_logger.info("synthesis done", extra={"fields": fields})
