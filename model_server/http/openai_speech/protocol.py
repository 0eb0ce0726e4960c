"""The wire format of OpenAI's speech API, as clients (the `openai` SDK, Open WebUI, ...) send it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictStr, model_validator

from bark_common.schema import BarkSampling, Dialogue, Language, VoiceOptions, require_text_or_turns
from model_server.generation.audio import AudioFormat

Speed = Annotated[float, Field(ge=0.25, le=4.0, strict=True)]


class SpeechRequest(BarkSampling, Dialogue, VoiceOptions):
    """Body of `POST /v1/audio/speech`: OpenAI's fields, and Bark's own as extensions (the sampling
    settings, `seed`, `batch_chunk_size`; a dialogue's `turns` and `turn_pause_ms`; `timestamps` and
    `captions`, which make the answer JSON, or add `speech.segment` events to an SSE stream; `continuity`
    and `save_voice`). The `openai` SDK sends them with `extra_body`. Unknown fields are still refused."""

    model: StrictStr = Field("bark", description="accepted for compatibility (tts-1, bark, ...); Bark serves all")
    input: StrictStr | None = Field(
        None, description="the text to speak; with `turns` leave it out or empty (the `openai` SDK requires it)"
    )
    voice: StrictStr = Field(
        "v2/en_speaker_1",
        description="a Bark preset, an OpenAI name (alloy, echo, ...), 'random' or one of your custom voices",
    )
    response_format: AudioFormat = "mp3"
    speed: Speed = Field(1.0, description="0.25..4.0, applied by resampling (the pitch moves with it)")
    stream: StrictBool = Field(False, description="stream the audio as it is generated (chunked transfer)")
    stream_format: Literal["audio", "sse"] | None = Field(
        None, description="'audio' streams raw audio bytes, 'sse' server-sent events with base64 deltas"
    )
    instructions: StrictStr | None = Field(None, description="accepted for compatibility; Bark ignores it")
    language: Language | None = Field(
        None, description="the text's language, one of Bark's 13 (en, de, ..., zh); default: the voice preset's"
    )

    @model_validator(mode="after")
    def _input_or_turns(self) -> SpeechRequest:
        # The `openai` SDK requires an `input` argument, so a dialogue sent with it carries `input=""`.
        if self.turns is not None and self.input is not None and not self.input.strip():
            self.input = None
        require_text_or_turns(self.input, self.turns, "input")
        return self

    @property
    def json_answer(self) -> bool:
        """Timestamps or captions on a whole (not streamed) answer: JSON with the audio in base64."""
        return self.streaming is None and (self.timestamps or self.captions is not None)

    @property
    def streaming(self) -> Literal["audio", "sse"] | None:
        if self.stream_format is not None:
            return self.stream_format
        return "audio" if self.stream else None
