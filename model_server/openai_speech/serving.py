"""Speech synthesis for the OpenAI route, on the same model, scheduler and encoders as v1 predict."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from .. import metrics
from ..audio import FORMATS, change_speed, encode, silence, stream_encoder, streaming_formats
from ..errors import InvalidInput
from ..limits import check_output_seconds
from ..model import BarkTTS, ChunkPayload, sampling_of
from ..schema import SynthesisRequest, describe_validation_error
from .protocol import SpeechRequest

ROUTE = "openai_speech"


@dataclass
class SpeechPlan:
    request: SpeechRequest
    synthesis: SynthesisRequest
    chunks: list[ChunkPayload]
    request_id: str


class SpeechService:
    """Turns a SpeechRequest into audio bytes, whole or streamed chunk by chunk."""

    def __init__(self, model: BarkTTS):
        self.model = model

    def plan(self, body: object, request_id: str | None) -> SpeechPlan:
        """Validate the body; raise InvalidInput naming the field (the router maps it to OpenAI's shape)."""
        try:
            request = SpeechRequest.model_validate(body)
        except ValidationError as error:
            raise InvalidInput(describe_validation_error(error)) from None
        settings = self.model.settings
        if not request.input.strip():
            raise InvalidInput("input: must not be empty")
        if len(request.input) > settings.max_prompt_chars:
            raise InvalidInput(
                f"input: {len(request.input)} characters is over the limit of {settings.max_prompt_chars}"
                " (max_prompt_chars)"
            )
        if request.streaming == "audio" and not FORMATS[request.response_format].streams:
            raise InvalidInput(
                f"response_format: {request.response_format!r} cannot stream; use one of {streaming_formats()}"
            )
        assert self.model.engine is not None
        voice = self.model.engine.voices.resolve(request.voice, "voice")
        synthesis = SynthesisRequest.model_validate({"prompt": request.input, "voice": voice})
        # Streaming speaks the first sentence as its own chunk so that audio starts sooner.
        chunks = self.model.plan_chunks(synthesis, first_sentence_alone=request.streaming is not None)
        check_output_seconds((chunk.budget for chunk in chunks), settings.max_output_seconds)
        return SpeechPlan(request, synthesis, chunks, request_id or uuid.uuid4().hex)

    async def whole(self, plan: SpeechPlan) -> bytes:
        started = time.perf_counter()
        result = await self.model.synthesize(plan.synthesis, plan.chunks)
        waveform = change_speed(result.waveform, plan.request.speed)
        encoding_started = time.perf_counter()
        data = await asyncio.to_thread(encode, waveform, self.model.sample_rate, plan.request.response_format)
        metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - encoding_started)
        self._done(plan, result.chunks, started, len(waveform))
        return data

    async def audio_pieces(self, plan: SpeechPlan) -> AsyncIterator[bytes]:
        """Encoded audio, chunk by chunk in order; the first chunk is one sentence, generated first."""
        started = time.perf_counter()
        model = self.model
        assert model.scheduler is not None
        chunks = plan.chunks
        key = (plan.synthesis.voice, sampling_of(plan.synthesis))
        futures = model.scheduler.enqueue(key, chunks, urgent_first=True)
        encoder = stream_encoder(plan.request.response_format, model.sample_rate)
        pause = silence(model.sample_rate, model.settings.pause_ms)
        samples = 0
        try:
            for index, future in enumerate(futures):
                waveform = await future
                if index:
                    waveform = np.concatenate([pause, waveform])
                waveform = change_speed(waveform, plan.request.speed)
                samples += len(waveform)
                yield encoder.feed(waveform)
            yield encoder.finish()
        finally:
            model.scheduler.cancel(futures)  # client gone or a chunk failed: drop what has not run
        self._done(plan, len(chunks), started, samples)

    async def sse_events(self, plan: SpeechPlan) -> AsyncIterator[bytes]:
        """OpenAI's SSE stream: `speech.audio.delta` events with base64 audio, then `speech.audio.done`."""
        async for piece in self.audio_pieces(plan):
            if piece:
                delta = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")}
                yield f"data: {json.dumps(delta)}\n\n".encode()
        done = {"type": "speech.audio.done", "usage": {"input_tokens": len(plan.request.input.split())}}
        yield f"data: {json.dumps(done)}\n\n".encode()

    def _done(self, plan: SpeechPlan, chunks: int, started: float, samples: int) -> None:
        audio_seconds = samples / self.model.sample_rate
        wall = time.perf_counter() - started
        self.model.record_success(ROUTE, plan.request_id, [plan.synthesis], chunks, wall, audio_seconds)
