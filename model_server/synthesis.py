"""The synthesis service: what every route asks of Bark, behind one object.

It owns the engine and the scheduler; it plans a prompt into chunks (each with its semantic token
budget), checks a request's estimated audio against `max_output_seconds`, queues chunks (chunks of
concurrent requests share batches), joins finished chunks into one waveform, and records a finished
request's metrics and log line. The KServe adapter (model.py) and the OpenAI route
(http/openai_speech/) both speak to it; neither touches the engine or the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bark_common.errors import InvalidInput
from model_server import metrics
from model_server.config import Settings
from model_server.generation import audio
from model_server.generation.engine import BarkEngine, Sampling
from model_server.generation.faults import release_cached_memory, run_splitting_on_oom
from model_server.generation.languages import resolve_language
from model_server.generation.limits import check_output_seconds
from model_server.generation.scheduler import BatchFailed, BatchRunner, ChunkScheduler, results_in_order
from model_server.generation.scheduler_choice import FatalHandler, build_scheduler
from model_server.generation.text import plan_chunks, semantic_budget
from model_server.progress import ProgressBoard
from model_server.schema import SynthesisRequest

request_logger = logging.getLogger("bark.requests")

BatchKey = tuple[str, Sampling]
#: Builds the scheduler over the service's batch runner (build_scheduler unless a test picks one);
#: its last argument is called if the device fails for good.
SchedulerFactory = Callable[[Settings, BatchRunner, Any, FatalHandler | None], ChunkScheduler]


@dataclass(frozen=True)
class ChunkPayload:
    text: str
    budget: int


@dataclass
class Synthesis:
    """One finished instance before encoding."""

    waveform: np.ndarray
    chunks: int


def sampling_of(request: SynthesisRequest) -> Sampling:
    return Sampling(
        do_sample=request.do_sample,
        semantic_temperature=request.semantic_temperature,
        coarse_temperature=request.coarse_temperature,
        fine_temperature=request.fine_temperature,
        seed=request.seed,
    )


class SynthesisService:
    """Bark's engine and scheduler, and what routes need of them: plans, limits, queueing, voices, metrics."""

    def __init__(
        self,
        settings: Settings,
        engine: BarkEngine,
        scheduler_factory: SchedulerFactory = build_scheduler,
        on_fatal: FatalHandler | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.scheduler = scheduler_factory(settings, self.run_batch, engine, on_fatal)
        #: Every sentence a chunk of its own (BARK_CHUNKING; `auto`: on CUDA, where rows are nearly free).
        self.sentence_chunks = settings.chunking == "sentence" or (
            settings.chunking == "auto" and engine.device.type == "cuda"
        )
        #: Chunks done per request id, for `GET /v1/requests/{id}/progress`.
        self.progress = ProgressBoard()

    @classmethod
    def load(cls, settings: Settings, on_fatal: FatalHandler | None = None) -> SynthesisService:
        """Load Bark's weights and warm them up (when `settings.warmup`), then start the scheduler.

        Under the continuous scheduler the batch decoder's graphs are never used, so they are not
        captured (its warm-up generation still runs, eagerly); the row engine warms itself up.
        """
        engine = BarkEngine(settings)
        if settings.warmup:
            engine.warm_up(capture_graphs=settings.scheduler == "static")
        return cls(settings, engine, on_fatal=on_fatal)

    # -- the engine side (runs in the scheduler's worker thread) -------------------------------
    def run_batch(self, key: BatchKey, payloads: list[ChunkPayload]) -> list[np.ndarray]:
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

    # -- what routes ask -----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    def resolve_voice(self, voice: str, field: str = "voice") -> str:
        return self.engine.voices.resolve(voice, field)

    def describe_voices(self) -> dict[str, Any]:
        """The voice presets with their language, and the OpenAI-name aliases."""
        return {"voices": self.engine.voices.describe(), "aliases": self.engine.voices.aliases}

    def plan_chunks(
        self, request: SynthesisRequest, first_sentence_alone: bool = False, field: str = "prompt"
    ) -> list[ChunkPayload]:
        """Sentences packed into chunks, each with a semantic token budget from its estimated speech.

        `field` names the text as the client sent it (`input` on the OpenAI route) in a 400."""
        settings = self.settings
        started = time.perf_counter()
        language = resolve_language(request.language, request.voice)
        max_words = request.batch_chunk_size or settings.default_chunk_words
        chunks = plan_chunks(
            request.prompt, max_words, language, first_sentence_alone, one_sentence_per_chunk=self.sentence_chunks
        )
        metrics.STAGE_LATENCY.labels(stage="split").observe(time.perf_counter() - started)
        if not chunks:
            raise InvalidInput(f"{field}: has no words to speak (no letter or digit in it)", param=field)
        per_word, minimum = settings.semantic_tokens_per_word, settings.semantic_tokens_min
        return [
            ChunkPayload(chunk.text, semantic_budget(chunk.seconds, per_word, minimum, self.engine.max_semantic_tokens))
            for chunk in chunks
        ]

    def check_output(self, chunks: Iterable[ChunkPayload]) -> None:
        """Refuse a request whose estimated audio is over `max_output_seconds`, before any chunk queues."""
        check_output_seconds((chunk.budget for chunk in chunks), self.settings.max_output_seconds)

    async def synthesize(
        self, request: SynthesisRequest, chunks: list[ChunkPayload] | None = None, request_id: str | None = None
    ) -> Synthesis:
        """Generate one instance's audio: all its chunks batched, trimmed and joined in order."""
        chunks = self.plan_chunks(request) if chunks is None else chunks
        try:
            parts = await results_in_order(self.enqueue(request, chunks, request_id=request_id), self.cancel)
        except BatchFailed as error:
            raise RuntimeError(str(error)) from error
        joined = audio.join_with_pauses(parts, self.sample_rate, self.settings.pause_ms)
        return Synthesis(waveform=joined, chunks=len(chunks))

    def enqueue(
        self,
        request: SynthesisRequest,
        chunks: Sequence[ChunkPayload],
        *,
        urgent_first: bool = False,
        request_id: str | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Queue every chunk now (a full queue refuses here); one future per chunk, in order.

        With a `request_id`, the chunks count towards that request's progress, and the scheduler
        shares rows out by it (a v1 request's instances are one request)."""
        key = (request.voice, sampling_of(request))
        futures = self.scheduler.enqueue(key, chunks, urgent_first=urgent_first, request=request_id)
        if request_id is not None:
            self.progress.track(request_id, futures)
        return futures

    def cancel(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Drop the queued chunks of `futures` that have not run."""
        self.scheduler.cancel(futures)

    async def close(self) -> None:
        await self.scheduler.close()

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
