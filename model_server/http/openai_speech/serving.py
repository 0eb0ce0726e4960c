"""Speech synthesis for the OpenAI route, on the same synthesis service and encoders as v1 predict.

A stream is opened before its response starts: the body is validated, every chunk is queued
(a full queue or a text longer than the queue is refused here) and the first chunk is generated
and encoded. So a refusal, a timeout or a failure before the first byte is a real status with
OpenAI's error body, never a `200` with an empty body. After the first byte the status cannot change:
a failure ends an SSE stream with an `error` event and aborts a raw audio stream (the connection
closes without the last chunk, so the client sees an incomplete transfer, never a clean end).

`request_timeout_s` bounds a stream as a whole, as it bounds any request. Speed change and
encoding of each piece run in a worker thread (anyio's, whose cancellation waits for the thread, so
the encoder is never closed while a piece is being encoded), and the encoder is closed however the
stream ends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
from pydantic import ValidationError

from bark_common.errors import ErrorDescription, InvalidInput, RequestTimedOut, describe_error
from bark_common.schema import BarkSampling, invalid_input_from
from model_server import metrics
from model_server.generation.audio import (
    FORMATS,
    StreamEncoder,
    change_speed,
    encode,
    silence,
    stream_encoder,
    streaming_formats,
)
from model_server.generation.languages import resolve_language
from model_server.generation.limits import check_words_per_request
from model_server.http.errors import openai_error
from model_server.http.openai_speech.protocol import SpeechRequest
from model_server.http.outcomes import note_failure
from model_server.paths import OPENAI_SPEECH_ROUTE
from model_server.schema import SynthesisRequest, check_chunk_words
from model_server.synthesis import ChunkPayload, SynthesisService

logger = logging.getLogger(__name__)


@dataclass
class SpeechPlan:
    request: SpeechRequest
    synthesis: SynthesisRequest
    chunks: list[ChunkPayload]
    request_id: str


class StreamAborted(Exception):
    """A stream failed after its first byte: the response ends without its closing chunk."""


class SpeechService:
    """Turns a SpeechRequest into audio bytes, whole or streamed chunk by chunk."""

    def __init__(self, synthesis: SynthesisService):
        self.synthesis = synthesis

    def plan(self, body: object, request_id: str | None) -> SpeechPlan:
        """Validate the body; raise InvalidInput naming the field (the router maps it to OpenAI's shape)."""
        try:
            request = SpeechRequest.model_validate(body)
        except ValidationError as error:
            raise invalid_input_from(error) from None
        settings = self.synthesis.settings
        if not request.input.strip():
            raise InvalidInput("input: must not be empty", param="input")
        if len(request.input) > settings.max_prompt_chars:
            raise InvalidInput(
                f"input: {len(request.input)} characters is over the limit of {settings.max_prompt_chars}"
                " (max_prompt_chars)",
                param="input",
            )
        if request.streaming is not None and not FORMATS[request.response_format].streams:  # SSE carries pieces too
            raise InvalidInput(
                f"response_format: {request.response_format!r} cannot stream; use one of {streaming_formats()}",
                param="response_format",
            )
        voice = self.synthesis.resolve_voice(request.voice, "voice")
        language = resolve_language(request.language, voice)
        check_words_per_request([(request.input, language)], settings.max_words_per_request, "input")
        check_chunk_words(request.batch_chunk_size, settings, "batch_chunk_size")
        sampling = request.model_dump(include=set(BarkSampling.model_fields))
        synthesis = SynthesisRequest.model_validate(
            {"prompt": request.input, "voice": voice, "language": language, **sampling}
        )
        # Streaming speaks the first sentence as its own chunk so that audio starts sooner.
        chunks = self.synthesis.plan_chunks(
            synthesis, first_sentence_alone=request.streaming is not None, field="input"
        )
        self.synthesis.check_output(chunks)
        return SpeechPlan(request, synthesis, chunks, request_id or uuid.uuid4().hex)

    async def whole(self, plan: SpeechPlan) -> bytes:
        started = time.perf_counter()
        result = await self.synthesis.synthesize(plan.synthesis, plan.chunks, plan.request_id)
        encoding_started = time.perf_counter()
        waveform, data = await anyio.to_thread.run_sync(self._speed_and_encode, result.waveform, plan)
        metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - encoding_started)
        self.record_success(plan, result.chunks, started, len(waveform))
        return data

    def _speed_and_encode(self, waveform: np.ndarray, plan: SpeechPlan) -> tuple[np.ndarray, bytes]:
        waveform = change_speed(waveform, plan.request.speed)
        return waveform, encode(waveform, self.synthesis.sample_rate, plan.request.response_format)

    async def open_stream(self, plan: SpeechPlan) -> SpeechStream:
        """Queue every chunk and make the first piece: any refusal or failure raises here, before any byte."""
        synthesis = self.synthesis
        started = time.perf_counter()
        deadline = time.monotonic() + synthesis.settings.request_timeout_s
        futures = synthesis.enqueue(plan.synthesis, plan.chunks, urgent_first=True, request_id=plan.request_id)
        try:
            encoder = await anyio.to_thread.run_sync(
                stream_encoder, plan.request.response_format, synthesis.sample_rate
            )
        except BaseException:
            synthesis.cancel(futures)
            raise
        stream = SpeechStream(self, plan, futures, encoder, started, deadline)
        try:
            stream.first = await stream.next_piece()
        except BaseException:
            stream.close()
            raise
        return stream

    def record_success(self, plan: SpeechPlan, chunks: int, started: float, samples: int) -> None:
        audio_seconds = samples / self.synthesis.sample_rate
        wall = time.perf_counter() - started
        self.synthesis.record_success(
            OPENAI_SPEECH_ROUTE, plan.request_id, [plan.synthesis], chunks, wall, audio_seconds
        )


class SpeechStream:
    """One streamed answer: its queued chunks, its encoder, and the first piece made before the response."""

    def __init__(
        self,
        service: SpeechService,
        plan: SpeechPlan,
        futures: list,
        encoder: StreamEncoder,
        started: float,
        deadline: float,
    ):
        self.service = service
        self.plan = plan
        self.first: bytes | None = None
        self._futures = futures
        self._encoder = encoder
        self._started = started
        self._deadline = deadline
        self._next = 0  # index of the next chunk to deliver; len(futures) means only the tail is left
        self._done = False
        self._samples = 0
        self._pause = silence(service.synthesis.sample_rate, service.synthesis.settings.pause_ms)

    async def next_piece(self) -> bytes | None:
        """The next chunk's encoded audio, then the encoder's tail, then None."""
        if self._done:
            return None
        if self._next == len(self._futures):
            self._done = True
            return await anyio.to_thread.run_sync(self._encoder.finish)
        future = self._futures[self._next]
        try:
            waveform = await asyncio.wait_for(future, max(self._deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            raise RequestTimedOut.after(self.service.synthesis.settings.request_timeout_s) from None
        piece = await anyio.to_thread.run_sync(self._feed, waveform, self._next > 0)
        self._next += 1
        return piece

    def _feed(self, waveform: np.ndarray, after_pause: bool) -> bytes:
        if after_pause:
            waveform = np.concatenate([self._pause, waveform])
        waveform = change_speed(waveform, self.plan.request.speed)
        self._samples += len(waveform)
        return self._encoder.feed(waveform)

    def close(self) -> None:
        """Drop the chunks that have not run (client gone, a chunk failed) and free the encoder."""
        self.service.synthesis.cancel(self._futures)
        self._encoder.close()

    async def audio(self) -> AsyncIterator[bytes]:
        """Raw audio pieces; a failure raises StreamAborted, which ends the response without its last chunk."""
        try:
            async for piece in self._pieces():
                yield piece
        except Exception as error:
            self._failed(error)
            raise StreamAborted(str(error)) from error
        finally:
            self.close()

    async def sse(self) -> AsyncIterator[bytes]:
        """OpenAI's SSE stream: `speech.audio.delta` events, then `speech.audio.done` or one `error` event."""
        try:
            async for piece in self._pieces():
                delta = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")}
                yield f"data: {json.dumps(delta)}\n\n".encode()
        except Exception as error:
            description = self._failed(error)
            message = str(error) if description.status == 504 else self._failure_message(error)
            error_event = {"type": "error", **openai_error(description, message)}
            yield f"event: error\ndata: {json.dumps(error_event)}\n\n".encode()
            return
        finally:
            self.close()
        done = {"type": "speech.audio.done", "usage": {"input_tokens": len(self.plan.request.input.split())}}
        yield f"data: {json.dumps(done)}\n\n".encode()

    async def _pieces(self) -> AsyncIterator[bytes]:
        piece = self.first
        while piece is not None:
            if piece:
                yield piece
            piece = await self.next_piece()
        self.service.record_success(self.plan, len(self._futures), self._started, self._samples)

    def _failure_message(self, error: BaseException) -> str:
        return f"generation failed (request id {self.plan.request_id}): {type(error).__name__}"

    def _failed(self, error: BaseException) -> ErrorDescription:
        """Count and log a failure after the first byte; the status already sent cannot say it."""
        description = describe_error(error)
        note_failure(description.status, description.reason)
        logger.error(
            "speech stream %s failed after %d of %d chunks (%s): %s",
            self.plan.request_id,
            self._next,
            len(self._futures),
            description.reason,
            error,
            exc_info=description.status == 500,
        )
        return description
