"""The synthesis request schema, shared by the model server (v1 instances) and the job sidecar.

Field names match the original Bark API (`prompt`, `voice`, `do_sample`, `fine_temperature`,
`coarse_temperature`, `batch_chunk_size`). Only pydantic here: `model_server.schema` re-exports these
names and adds the checks that need the server's settings.
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .errors import InvalidInput
from .formats import AudioFormat

# At least 0.01: logits divided by a near-zero temperature overflow to inf and sampling fails
# (found by the schemathesis fuzz tests: 5e-324 was a 500); 0.01 is already greedy in practice.
Temperature = Annotated[float, Field(ge=0.01, le=2, strict=True)]

DEFAULT_VOICE = "v2/en_speaker_1"

#: The languages Bark speaks (its `v2/<code>_speaker_<n>` presets); model_server.generation.languages has their rates.
BARK_LANGUAGES = ("de", "en", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")


def _bark_language(code: str) -> str:
    """`pt-BR` -> `pt`, `ZH` -> `zh`; anything Bark does not speak is refused (HTTP 400)."""
    primary = code.strip().replace("_", "-").split("-", 1)[0].lower()
    if primary not in BARK_LANGUAGES:
        raise ValueError(f"{code!r} is not one of Bark's languages; use one of {', '.join(BARK_LANGUAGES)}")
    return primary


#: A language override: one of BARK_LANGUAGES, or a tag whose primary subtag is one (`zh-CN`).
Language = Annotated[StrictStr, AfterValidator(_bark_language)]


class BarkSampling(BaseModel):
    """How Bark generates: the original API's sampling settings and chunk size, plus a seed.

    v1 instances carry them, and so may OpenAI speech requests (as extra body fields, like vLLM's
    sampling extensions to OpenAI's API), so a stream can be seeded too.
    """

    model_config = ConfigDict(extra="forbid")

    do_sample: StrictBool = Field(True, description="sample (natural) or decode greedily (repeatable)")
    semantic_temperature: Temperature = 0.7
    coarse_temperature: Temperature = 0.7
    fine_temperature: Temperature = 0.5
    batch_chunk_size: StrictInt | None = Field(
        None,
        description="words per generated chunk (zh, ja, ko: the speaking time of as many English words); "
        "whole sentences are packed up to it, never past about 13 s",
    )
    seed: StrictInt | None = Field(None, ge=0, le=2**32 - 1, description="fixes sampling for repeatable audio")


#: Silence between two turns of a dialogue: about the gap people leave between speakers, a little
#: longer than the pause between chunks of one voice (`pause_ms`), so a change of speaker is heard.
DEFAULT_TURN_PAUSE_MS = 400
MAX_TURN_PAUSE_MS = 5_000

CaptionFormat = Literal["srt", "vtt"]


class Turn(BaseModel):
    """One speaker's turn of a dialogue: its text, voice and language."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(description="what this speaker says")
    voice: StrictStr | None = Field(
        None, description="a voice preset, an OpenAI name, 'random' or a custom voice; default: the request's"
    )
    language: Language | None = Field(
        None, description="the turn's language, one of Bark's 13; default: the request's, else the voice preset's"
    )


class Dialogue(BaseModel):
    """Several speakers in one request, and the times of what was said (v1 instances and the OpenAI route).

    All turns' chunks are generated together, so a dialogue takes about as long as one voice saying
    the same text; each turn is planned like a prompt of its own voice and language.
    """

    turns: list[Turn] | None = Field(
        None, min_length=1, description="speak these turns in order instead of one text, each in its own voice"
    )
    turn_pause_ms: StrictInt = Field(
        DEFAULT_TURN_PAUSE_MS, ge=0, le=MAX_TURN_PAUSE_MS, description="silence between two turns, in milliseconds"
    )
    timestamps: StrictBool = Field(
        False, description="also return `segments`: each sentence's turn, voice, text and start/end in seconds"
    )
    captions: CaptionFormat | None = Field(None, description="also return the segments as SRT or WebVTT captions")


#: A custom voice's name (`POST /v1/audio/voices`, `save_voice`): safe as a file name, no path in it.
VOICE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Continuity = Literal["preset", "previous"]


class SaveVoice(BaseModel):
    """Keep the voice just heard: the first chunk's tokens, stored as a custom voice of the caller."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(
        pattern=VOICE_NAME_PATTERN, description="the new voice's name: 1-64 letters, digits, '-', '_'"
    )
    description: StrictStr | None = Field(None, max_length=500, description="what it sounds like")


class VoiceOptions(BaseModel):
    """How a voice is held and kept (v1 instances and the OpenAI route's extensions)."""

    continuity: Continuity = Field(
        "preset",
        description="'preset': every chunk starts from the voice's prompt; 'previous': each chunk's prompt is the "
        "previous chunk's generated tokens, so the voice carries through a long text (its chunks then run in "
        "sequence: slower, see docs/VOICES.md)",
    )
    save_voice: SaveVoice | None = Field(
        None, description="store the first chunk's tokens as a custom voice of this API key (e.g. of voice 'random')"
    )


class Segment(BaseModel):
    """Where one sentence (or a piece of one cut over chunks) sits in the audio.

    A chunk's start and end are exact, since the server joins the chunks; sentences inside a chunk
    of several are placed by their share of its estimated speaking time (`exact: false`)."""

    turn: int = Field(description="the turn it belongs to (0 for a plain prompt)")
    voice: str = Field(description="the voice preset that speaks it")
    text: str
    start_s: float
    end_s: float
    chunk: int = Field(description="the generated chunk it is in, counted over the whole request")
    exact: bool = Field(description="true when start and end are the chunk's own (measured, not estimated)")


class SynthesisRequest(BarkSampling, Dialogue, VoiceOptions):
    """One v1 instance: a text (or the turns of a dialogue) to speak, and how."""

    prompt: StrictStr | None = Field(
        None, description="text to speak, any length up to the server's limit; or give `turns` instead"
    )
    voice: StrictStr = Field(
        DEFAULT_VOICE,
        description="a voice preset, an OpenAI name, 'random' (no prompt: a new speaker) or one of your custom "
        "voices; GET /v1/audio/voices lists them",
    )
    language: Language | None = Field(
        None, description="the text's language, one of Bark's 13 (en, de, ..., zh); default: the voice preset's"
    )
    format: AudioFormat = "wav"

    @model_validator(mode="after")
    def _prompt_or_turns(self) -> SynthesisRequest:
        require_text_or_turns(self.prompt, self.turns, "prompt")
        return self

    def spoken_turns(self) -> list[SpokenTurn]:
        """What is spoken, turn by turn: a prompt is one turn in the request's voice and language; a
        turn without a voice or language takes the request's."""
        if self.turns is None:
            return [SpokenTurn(self.prompt or "", self.voice, self.language)]
        return [SpokenTurn(t.text, t.voice or self.voice, t.language or self.language) for t in self.turns]


class SpokenTurn(NamedTuple):
    text: str
    voice: str
    #: None: the voice preset's language.
    language: str | None


def require_text_or_turns(text: str | None, turns: list[Turn] | None, field: str) -> None:
    """Exactly one of a text (`prompt`, OpenAI's `input`) and `turns`. The error is raised at `field`,
    so a 400 names it as the client wrote it (`instances[0].prompt`), not the instance as a whole."""
    if (text is None) != (turns is None):
        return
    given = "both" if text is not None else "neither"
    message = f"give either `{field}` (one voice) or `turns` (a dialogue), not {given}"
    detail = InitErrorDetails(type=PydanticCustomError("text_or_turns", message), loc=(field,), input=text)
    raise ValidationError.from_exception_data("text_or_turns", [detail])


def invalid_input_from(error: ValidationError) -> InvalidInput:
    """A 400 with one line per problem, each naming the field the way a client wrote it
    (`instances[0].voice`); `param` is the first problem's field (None for the body as a whole)."""
    fields, lines = [], []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        fields.append(path or None)
        lines.append(f"{path or 'body'}: {item['msg']}")
    return InvalidInput("; ".join(lines), param=fields[0] if fields else None)
