"""The synthesis service: what every route asks of Bark, behind one object.

It owns the engine and the scheduler; it plans a prompt, or each turn of a dialogue, into chunks
(each with its semantic token budget), checks a request's estimated audio against
`max_output_seconds`, queues chunks (chunks of concurrent requests share batches; all turns of a
dialogue are queued at once, as one request), joins finished chunks into one waveform with the times
of every sentence (timeline.py), and records a finished request's metrics and log line. The KServe
adapter (model.py) and the OpenAI route (http/openai_speech/) both speak to it; neither touches the
engine or the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bark_common.errors import InvalidInput
from bark_common.schema import SaveVoice, Segment
from model_server import metrics
from model_server.callers import ANONYMOUS_CALLER, Caller, Callers
from model_server.chunk_chains import ChunkChains, Link, relay_first
from model_server.config import Settings
from model_server.custom_voices import CustomVoices, VoiceChoice
from model_server.generation import audio
from model_server.generation.audio import AudioFormat
from model_server.generation.captions import captions
from model_server.generation.engine import BarkEngine, Sampling
from model_server.generation.faults import release_cached_memory, run_splitting_on_oom
from model_server.generation.languages import resolve_language
from model_server.generation.limits import check_output_seconds
from model_server.generation.scheduler import (
    BatchFailed,
    BatchRunner,
    ChunkScheduler,
    check_fits_queue,
    results_in_order,
)
from model_server.generation.scheduler_choice import FatalHandler, build_scheduler
from model_server.generation.speaker_prompt import SpeakerPrompt
from model_server.generation.text import TextChunk, plan_chunks, semantic_budget
from model_server.generation.timeline import SpokenChunk, Timeline, join_chunks
from model_server.progress import ProgressBoard
from model_server.schema import SynthesisRequest, SynthesisResult

request_logger = logging.getLogger("bark.requests")

BatchKey = tuple[str | None, Sampling]
#: Builds the scheduler over the service's batch runner (build_scheduler unless a test picks one);
#: its last argument is called if the device fails for good.
SchedulerFactory = Callable[[Settings, BatchRunner, Any, FatalHandler | None], ChunkScheduler]


@dataclass(frozen=True)
class ChunkPayload:
    """One chunk as the engine gets it (text, semantic token budget), and its sentences for timestamps;
    `history` and `keep_tokens` as the row engine reads them (continuous/bark_rows.Job)."""

    text: str
    budget: int
    sentences: tuple[TextChunk, ...] = ()
    history: SpeakerPrompt | None = None
    keep_tokens: bool = False


@dataclass(frozen=True)
class TurnPlan:
    """One turn's chunks, all in its voice (a plain prompt is one turn)."""

    chunks: list[ChunkPayload]
    choice: VoiceChoice

    @property
    def voice(self) -> str:
        return self.choice.name

    @property
    def key(self) -> str | None:
        return self.choice.key


@dataclass(frozen=True)
class SynthesisPlan:
    """One instance planned: its turns' chunks, in the order they are spoken, and who asked."""

    turns: list[TurnPlan]
    caller: Caller = ANONYMOUS_CALLER
    save_voice: SaveVoice | None = None
    continuity: bool = False

    @property
    def chunks(self) -> list[ChunkPayload]:
        return [chunk for turn in self.turns for chunk in turn.chunks]

    def spoken(self) -> list[SpokenChunk]:
        """Every chunk's turn, voice, text and sentences, in order (what the timeline places)."""
        return [
            SpokenChunk(index, turn.voice, chunk.text, chunk.sentences)
            for index, turn in enumerate(self.turns)
            for chunk in turn.chunks
        ]


@dataclass
class Synthesis:
    """One finished instance before encoding, with where each sentence sits in it."""

    waveform: np.ndarray
    chunks: int
    segments: list[Segment]


def _field(where: str, name: str) -> str:
    """`instances[0].voice` in a v1 body, `voice` at the top of an OpenAI body (`where` empty)."""
    return f"{where}.{name}" if where else name


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
        voices: CustomVoices | None = None,
    ):
        self.settings = settings
        self.engine = engine
        #: Presets, aliases, `random` and the custom voices (none without a store: tests over a stand-in).
        self.voices = voices or CustomVoices(engine.voices, engine.prompt_limits, None)
        #: Who is asking (API keys, admin keys), as the owner of custom voices.
        self.callers = Callers.from_settings(settings, self.voices.owner_secret)
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

        Under the continuous scheduler the batch path (its graphs, a generation) is never used, so only
        the voice presets are loaded here; the row engine warms itself up (scheduler_choice.py).
        """
        engine = BarkEngine(settings)
        if settings.warmup:
            engine.warm_up(batch_path=settings.scheduler == "static")
        return cls(settings, engine, on_fatal=on_fatal, voices=CustomVoices.open(settings, engine))

    # -- the engine side (runs in the scheduler's worker thread) -------------------------------
    def run_batch(self, key: BatchKey, payloads: list[ChunkPayload]) -> list[np.ndarray]:
        engine = self.engine
        voice, sampling = key

        def generate(part: list[ChunkPayload]) -> list[np.ndarray]:
            # One key, one history (a custom voice's key names its prompt's digest); only a batch with
            # one passes it, so an engine that knows no custom voices is called as ever.
            texts, budgets = [payload.text for payload in part], [payload.budget for payload in part]
            extra = {"prompt": part[0].history} if part[0].history is not None else {}
            output = engine.generate_batch(texts, voice, sampling, budgets, **extra)
            for stage, seconds in output.stage_seconds.items():
                metrics.STAGE_LATENCY.labels(stage=stage).observe(seconds)
            return output.waveforms

        # An out-of-memory batch runs again as halves (faults.py) before any of its requests fail.
        return run_splitting_on_oom(generate, payloads, lambda: release_cached_memory(engine.device))

    # -- what routes ask -----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    def resolve_voices(
        self, request: SynthesisRequest, where: str = "", caller: Caller = ANONYMOUS_CALLER
    ) -> SynthesisRequest:
        """The request with its voice, and every turn's, one `caller` may use (an alias resolved to its
        preset): a 400 names the voice at fault. A turn without a voice gets the request's."""
        voice = self.voices.resolve(request.voice, caller, _field(where, "voice"))
        update: dict[str, Any] = {"voice": voice}
        if request.turns is not None:
            update["turns"] = [
                turn.model_copy(
                    update={"voice": self.voices.resolve(turn.voice, caller, _field(where, f"turns[{i}].voice"))}
                )
                if turn.voice
                else turn.model_copy(update={"voice": voice})
                for i, turn in enumerate(request.turns)
            ]
        return request.model_copy(update=update)

    def describe_voices(self, caller: Caller = ANONYMOUS_CALLER) -> dict[str, Any]:
        """The voice presets with their language, the OpenAI-name aliases, and the caller's custom voices."""
        return self.voices.describe(caller)

    def plan(
        self,
        request: SynthesisRequest,
        *,
        first_sentence_alone: bool = False,
        where: str = "",
        text_field: str = "prompt",
        caller: Caller = ANONYMOUS_CALLER,
    ) -> SynthesisPlan:
        """The request's turns (a prompt is one) planned into chunks, each turn in its voice and language.

        `where`/`text_field` name the text as the client sent it in a 400 (`instances[0].prompt`; the
        OpenAI route's `input`; a turn's `turns[2].text`). With `first_sentence_alone`, the first
        turn's first sentence is a chunk of its own (a stream's first audio comes sooner). `caller`:
        whose custom voices the turns may use (and who keeps a `save_voice`)."""
        self._check_voice_options(request, where, caller)
        turns = []
        for index, turn in enumerate(request.spoken_turns()):
            field = _field(where, text_field if request.turns is None else f"turns[{index}].text")
            voice_field = _field(where, "voice" if request.turns is None else f"turns[{index}].voice")
            choice = self.voices.choose(turn.voice, caller, voice_field)
            # A custom voice's language is its own (never read from its name, as a preset's is).
            language = resolve_language(turn.language or choice.language, turn.voice if choice.prompt is None else "")
            first_alone = first_sentence_alone and not index
            chunks = self.plan_chunks(turn.text, language, request.batch_chunk_size, first_alone, field)
            if choice.prompt is not None:
                chunks = [replace(chunk, history=choice.prompt) for chunk in chunks]
            turns.append(TurnPlan(chunks, choice))
        return SynthesisPlan(turns, caller, request.save_voice, request.continuity == "previous")

    def _check_voice_options(self, request: SynthesisRequest, where: str, caller: Caller) -> None:
        """`continuity: "previous"` and `save_voice` need tokens handed back (the continuous loop's
        engine does); a `save_voice` name must be free before any audio is made (400/403/409)."""
        field = _field(where, "save_voice" if request.save_voice is not None else "continuity")
        if (request.save_voice or request.continuity == "previous") and self.settings.scheduler != "continuous":
            raise InvalidInput(f"{field}: needs the continuous scheduler, not BARK_SCHEDULER=static", param=field)
        if request.save_voice is not None:
            self.voices.check_new(caller, request.save_voice.name, f"{field}.name")

    def plan_chunks(
        self, text: str, language: str, batch_chunk_size: int | None, first_sentence_alone: bool, field: str
    ) -> list[ChunkPayload]:
        """Sentences packed into chunks, each with a semantic token budget from its estimated speech."""
        settings = self.settings
        started = time.perf_counter()
        max_words = batch_chunk_size or settings.default_chunk_words
        chunks = plan_chunks(
            text, max_words, language, first_sentence_alone, one_sentence_per_chunk=self.sentence_chunks
        )
        metrics.STAGE_LATENCY.labels(stage="split").observe(time.perf_counter() - started)
        if not chunks:
            raise InvalidInput(f"{field}: has no words to speak (no letter or digit in it)", param=field)
        per_word, minimum = settings.semantic_tokens_per_word, settings.semantic_tokens_min
        maximum = self.engine.max_semantic_tokens
        return [
            ChunkPayload(chunk.text, semantic_budget(chunk.seconds, per_word, minimum, maximum), chunk.sentences)
            for chunk in chunks
        ]

    def check_output(self, chunks: Iterable[ChunkPayload]) -> None:
        """Refuse a request whose estimated audio is over `max_output_seconds`, before any chunk queues."""
        check_output_seconds((chunk.budget for chunk in chunks), self.settings.max_output_seconds)

    def timeline(self, request: SynthesisRequest, speed: float = 1.0) -> Timeline:
        """Where the request's chunks fall in its audio: `pause_ms` inside a turn, its `turn_pause_ms` between."""
        return Timeline(self.sample_rate, self.settings.pause_ms, request.turn_pause_ms, speed)

    async def synthesize(
        self,
        request: SynthesisRequest,
        plan: SynthesisPlan | None = None,
        request_id: str | None = None,
        speed: float = 1.0,
    ) -> Synthesis:
        """Generate one instance's audio: all its turns' chunks queued at once, trimmed and joined in order.

        `speed`: the segments' times are for the audio played that much faster (the caller resamples)."""
        plan = self.plan(request) if plan is None else plan
        try:
            parts = await results_in_order(self.enqueue(request, plan, request_id=request_id), self.cancel)
        except BatchFailed as error:
            raise RuntimeError(str(error)) from error
        waveform, segments = join_chunks(parts, plan.spoken(), self.timeline(request, speed))
        return Synthesis(waveform=waveform, chunks=len(parts), segments=segments)

    def enqueue(
        self,
        request: SynthesisRequest,
        plan: SynthesisPlan,
        *,
        urgent_first: bool = False,
        request_id: str | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Queue every chunk of every turn now (a full queue refuses here); one future per chunk, in order.

        Each turn is queued under its own voice, all with the request's sampling settings and seed, so
        a turn's chunks get the seeds they would get alone. They share one request for the scheduler's
        fair admission (a dialogue is one request, as are a v1 request's instances, by `request_id`),
        and with a `request_id` they count towards that request's progress."""
        check_fits_queue(len(plan.chunks), self.scheduler.max_queue_chunks)
        sampling = sampling_of(request)
        owner: Any = request_id if request_id is not None else object()
        on_first = None
        if plan.save_voice is not None:  # the first turn's tokens, kept under the caller's name
            language = request.spoken_turns()[0].language
            on_first = self.voices.keeper(plan.caller, plan.save_voice, plan.turns[0].choice, language)
        if plan.continuity:  # each voice's chunks in sequence, each with its predecessor's tokens
            links = [Link(chunk, turn.key, turn.voice) for turn in plan.turns for chunk in turn.chunks]
            chains = ChunkChains(
                self.scheduler, sampling, owner, self.engine.prompt_limits, on_first=on_first, urgent_first=urgent_first
            )
            futures = chains.start(links)
        else:
            futures = self._enqueue_turns(plan, sampling, owner, urgent_first)
            if on_first is not None:
                futures[0] = relay_first(self.scheduler, futures[0], on_first)
        if request_id is not None:
            self.progress.track(request_id, futures)
        return futures

    def _enqueue_turns(
        self, plan: SynthesisPlan, sampling: Sampling, owner: Any, urgent_first: bool
    ) -> list[asyncio.Future[Any]]:
        """Every turn's chunks at once, one enqueue per turn (a `save_voice`'s first chunk keeps its tokens)."""
        futures: list[asyncio.Future[Any]] = []
        try:
            for index, turn in enumerate(plan.turns):
                chunks = turn.chunks
                if plan.save_voice is not None and not index:
                    chunks = [replace(chunks[0], keep_tokens=True), *chunks[1:]]
                futures += self.scheduler.enqueue(
                    (turn.key, sampling), chunks, urgent_first=urgent_first and not index, request=owner
                )
        except BaseException:
            self.cancel(futures)  # a later turn refused (queue full): the earlier ones do not run
            raise
        return futures

    def result(
        self, request: SynthesisRequest, synthesis: Synthesis, fmt: AudioFormat, waveform: np.ndarray | None = None
    ) -> SynthesisResult:
        """The wire form of one instance: the encoded audio (`waveform`: after a speed change), with
        its segments and captions when the request asked for them."""
        waveform = synthesis.waveform if waveform is None else waveform
        return SynthesisResult(
            audio=audio.encode_base64(waveform, self.sample_rate, fmt),
            format=fmt,
            sample_rate=self.sample_rate,
            duration_s=round(len(waveform) / self.sample_rate, 4),
            chunks=synthesis.chunks,
            segments=synthesis.segments if request.timestamps else None,
            captions=captions(synthesis.segments, request.captions, request.turns is not None)
            if request.captions
            else None,
            saved_voice=request.save_voice.name if request.save_voice is not None else None,
        )

    def cancel(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Drop the queued chunks of `futures` that have not run."""
        self.scheduler.cancel(futures)

    async def close(self) -> None:
        await self.scheduler.close()
        await asyncio.to_thread(self.voices.close)

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
            for voice in dict.fromkeys(self.voices.label(turn.voice) for turn in request.spoken_turns()):
                metrics.VOICE_REQUESTS.labels(voice=voice).inc()
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
            fields["prompts"] = [" ".join(turn.text for turn in request.spoken_turns()) for request in requests]
        request_logger.info("synthesis done", extra={"fields": fields})
