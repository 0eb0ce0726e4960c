"""Speech synthesis for the OpenAI route, on the same synthesis service and encoders as v1 predict.

A stream is opened before its response starts: the body is validated, every chunk is queued
(a full queue or a text longer than the queue is refused here) and the first chunk is generated
and encoded. So a refusal, a timeout or a failure before the first byte is a real status with
OpenAI's error body, never a `200` with an empty body. After the first byte the status cannot change:
a failure ends an SSE stream with an `error` event and aborts a raw audio stream (the connection
closes without the last chunk, so the client sees an incomplete transfer, never a clean end).

With `timestamps`, a whole answer is JSON (the v1 prediction's shape: base64 audio, `segments`, and
`captions` when asked) and an SSE stream sends each chunk's `speech.segment` events (its sentences'
text and times, from the same timeline as a whole answer) just before that chunk's audio.

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
from bark_common.schema import BarkSampling, Dialogue, Segment, VoiceOptions, invalid_input_from
from model_server import metrics
from model_server.callers import ANONYMOUS_CALLER, Caller
from model_server.generation.audio import (
    FORMATS,
    StreamEncoder,
    change_speed,
    encode,
    stream_encoder,
    streaming_formats,
)
from model_server.http.errors import openai_error
from model_server.http.openai_speech.protocol import SpeechRequest
from model_server.http.outcomes import note_failure
from model_server.paths import OPENAI_SPEECH_ROUTE
from model_server.schema import SynthesisRequest, check_chunk_words, check_text_or_turns, check_total_words
from model_server.synthesis import SynthesisPlan, SynthesisService

logger = logging.getLogger(__name__)

#: What a SpeechRequest passes on to the synthesis request as it is (OpenAI's `input` becomes `prompt`).
_SHARED_FIELDS = {*BarkSampling.model_fields, *Dialogue.model_fields, *VoiceOptions.model_fields, "voice", "language"}
JSON_CONTENT_TYPE = "application/json"


@dataclass
class SpeechPlan:
    request: SpeechRequest
    synthesis: SynthesisRequest
    plan: SynthesisPlan
    request_id: str

    @property
    def content_type(self) -> str:
        """The whole answer's type: JSON with timestamps or captions, else the audio format's."""
        return JSON_CONTENT_TYPE if self.request.json_answer else FORMATS[self.request.response_format].content_type


def _check_timing_fits(request: SpeechRequest) -> None:
    """Timestamps need SSE or a whole answer; captions a whole answer (they describe all of it)."""
    if request.streaming == "audio" and request.timestamps:
        raise InvalidInput(
            "timestamps: a raw audio stream has no room for them; use stream_format 'sse' (speech.segment "
            "events) or no stream (a JSON answer)",
            param="timestamps",
        )
    if request.streaming is not None and request.captions is not None:
        raise InvalidInput(
            "captions: they come with a whole answer, not a stream; stream with stream_format 'sse' and "
            "timestamps for each segment as it is spoken",
            param="captions",
        )


class StreamAborted(Exception):
    """A stream failed after its first byte: the response ends without its closing chunk."""


class SpeechService:
    """Turns a SpeechRequest into audio bytes, whole or streamed chunk by chunk."""

    def __init__(self, synthesis: SynthesisService):
        self.synthesis = synthesis

    def plan(self, body: object, request_id: str | None, caller: Caller = ANONYMOUS_CALLER) -> SpeechPlan:
        """Validate the body; raise InvalidInput naming the field (the router maps it to OpenAI's shape).
        `caller`: whose custom voices it may use (and who keeps a `save_voice`)."""
        try:
            request = SpeechRequest.model_validate(body)
        except ValidationError as error:
            raise invalid_input_from(error) from None
        settings = self.synthesis.settings
        check_text_or_turns(request.input, request.turns, settings, "input", "turns")
        if request.streaming is not None and not FORMATS[request.response_format].streams:  # SSE carries pieces too
            raise InvalidInput(
                f"response_format: {request.response_format!r} cannot stream; use one of {streaming_formats()}",
                param="response_format",
            )
        _check_timing_fits(request)
        fields = request.model_dump(include=_SHARED_FIELDS, exclude_none=True)
        if request.input is not None:
            fields["prompt"] = request.input
        synthesis = self.synthesis.resolve_voices(SynthesisRequest.model_validate(fields), caller=caller)
        check_total_words([synthesis], settings, "input" if request.turns is None else "turns")
        check_chunk_words(request.batch_chunk_size, settings, "batch_chunk_size")
        # Streaming speaks the first sentence as its own chunk so that audio starts sooner.
        first_alone = request.streaming is not None
        planned = self.synthesis.plan(synthesis, first_sentence_alone=first_alone, text_field="input", caller=caller)
        self.synthesis.check_output(planned.chunks)
        return SpeechPlan(request, synthesis, planned, request_id or uuid.uuid4().hex)

    async def whole(self, plan: SpeechPlan) -> bytes:
        """The whole answer: the audio file, or with timestamps/captions the JSON prediction around it."""
        started = time.perf_counter()
        speed = plan.request.speed
        result = await self.synthesis.synthesize(plan.synthesis, plan.plan, plan.request_id, speed=speed)
        encoding_started = time.perf_counter()

        def speed_and_encode() -> tuple[np.ndarray, bytes]:
            waveform = change_speed(result.waveform, speed)
            if not plan.request.json_answer:
                return waveform, encode(waveform, self.synthesis.sample_rate, plan.request.response_format)
            prediction = self.synthesis.result(plan.synthesis, result, plan.request.response_format, waveform)
            return waveform, prediction.model_dump_json(exclude_none=True).encode()

        waveform, data = await anyio.to_thread.run_sync(speed_and_encode)
        metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - encoding_started)
        self.record_success(plan, result.chunks, started, len(waveform))
        return data

    async def open_stream(self, plan: SpeechPlan) -> SpeechStream:
        """Queue every chunk and make the first piece: any refusal or failure raises here, before any byte."""
        synthesis = self.synthesis
        started = time.perf_counter()
        deadline = time.monotonic() + synthesis.settings.request_timeout_s
        futures = synthesis.enqueue(plan.synthesis, plan.plan, urgent_first=True, request_id=plan.request_id)
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


@dataclass(frozen=True)
class Piece:
    """One step of a stream: encoded audio (may be empty while an encoder buffers) and the segments
    of the chunk in it (none for the encoder's tail)."""

    audio: bytes
    segments: list[Segment]


def _event(data: dict) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


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
        self.first: Piece | None = None
        self._futures = futures
        self._encoder = encoder
        self._started = started
        self._deadline = deadline
        self._next = 0  # index of the next chunk to deliver; len(futures) means only the tail is left
        self._done = False
        self._samples = 0
        self._spoken = plan.plan.spoken()
        self._timeline = service.synthesis.timeline(plan.synthesis, plan.request.speed)

    async def next_piece(self) -> Piece | None:
        """The next chunk's encoded audio and segments, then the encoder's tail, then None."""
        if self._done:
            return None
        if self._next == len(self._futures):
            self._done = True
            return Piece(await anyio.to_thread.run_sync(self._encoder.finish), [])
        future = self._futures[self._next]
        try:
            waveform = await asyncio.wait_for(future, max(self._deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            raise RequestTimedOut.after(self.service.synthesis.settings.request_timeout_s) from None
        piece = await anyio.to_thread.run_sync(self._feed, waveform)
        self._next += 1
        return piece

    def _feed(self, waveform: np.ndarray) -> Piece:
        """The chunk after its silence (the timeline knows which: inside a turn or between two), resampled."""
        gap, segments = self._timeline.place(self._spoken[self._next], len(waveform))
        if gap:
            waveform = np.concatenate([np.zeros(gap, dtype=np.float32), waveform])
        waveform = change_speed(waveform, self.plan.request.speed)
        self._samples += len(waveform)
        return Piece(self._encoder.feed(waveform), segments)

    def close(self) -> None:
        """Drop the chunks that have not run (client gone, a chunk failed) and free the encoder."""
        self.service.synthesis.cancel(self._futures)
        self._encoder.close()

    async def audio(self) -> AsyncIterator[bytes]:
        """Raw audio pieces; a failure raises StreamAborted, which ends the response without its last chunk."""
        try:
            async for piece in self._pieces():
                if piece.audio:
                    yield piece.audio
        except Exception as error:
            self._failed(error)
            raise StreamAborted(str(error)) from error
        finally:
            self.close()

    async def sse(self) -> AsyncIterator[bytes]:
        """OpenAI's SSE stream: `speech.audio.delta` events, then `speech.audio.done` or one `error` event;
        with `timestamps`, a chunk's `speech.segment` events come just before its audio."""
        timestamps = self.plan.request.timestamps
        try:
            async for piece in self._pieces():
                for segment in piece.segments if timestamps else []:
                    yield _event({"type": "speech.segment", **segment.model_dump()})
                if piece.audio:
                    yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(piece.audio).decode("ascii")})
        except Exception as error:
            description = self._failed(error)
            message = str(error) if description.status == 504 else self._failure_message(error)
            error_event = {"type": "error", **openai_error(description, message)}
            yield f"event: error\ndata: {json.dumps(error_event)}\n\n".encode()
            return
        finally:
            self.close()
        words = sum(len(turn.text.split()) for turn in self.plan.synthesis.spoken_turns())
        yield _event({"type": "speech.audio.done", "usage": {"input_tokens": words}})

    async def _pieces(self) -> AsyncIterator[Piece]:
        piece = self.first
        while piece is not None:
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
