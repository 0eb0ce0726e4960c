"""The synthesis request schema, shared by the model server (v1 instances) and the job sidecar.

Field names match the original Bark API (`prompt`, `voice`, `do_sample`, `fine_temperature`,
`coarse_temperature`, `batch_chunk_size`). Only pydantic here: `model_server.schema` re-exports these
names and adds the checks that need the server's settings.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

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


class SynthesisRequest(BarkSampling):
    """One v1 instance: a text to speak and how."""

    prompt: StrictStr = Field(description="text to speak, any length up to the server's limit")
    voice: StrictStr = Field(DEFAULT_VOICE, description="a voice preset; GET /v1/voices lists them")
    language: Language | None = Field(
        None, description="the text's language, one of Bark's 13 (en, de, ..., zh); default: the voice preset's"
    )
    format: AudioFormat = "wav"


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
