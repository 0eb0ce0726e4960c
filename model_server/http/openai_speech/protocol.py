"""The wire format of OpenAI's speech API, as clients (the `openai` SDK, Open WebUI, ...) send it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictStr

from bark_common.schema import BarkSampling, Language
from model_server.generation.audio import AudioFormat

Speed = Annotated[float, Field(ge=0.25, le=4.0, strict=True)]


class SpeechRequest(BarkSampling):
    """Body of `POST /v1/audio/speech`: OpenAI's fields, and Bark's sampling settings as extensions
    (`do_sample`, the three temperatures, `seed`, `batch_chunk_size`; the `openai` SDK sends them with
    `extra_body`). Unknown fields are still refused."""

    model: StrictStr = Field("bark", description="accepted for compatibility (tts-1, bark, ...); Bark serves all")
    input: StrictStr = Field(description="the text to speak")
    voice: StrictStr = Field("v2/en_speaker_1", description="a Bark preset or an OpenAI name (alloy, echo, ...)")
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

    @property
    def streaming(self) -> Literal["audio", "sse"] | None:
        if self.stream_format is not None:
            return self.stream_format
        return "audio" if self.stream else None
