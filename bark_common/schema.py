"""The synthesis request schema, shared by the model server (v1 instances) and the job sidecar.

Field names match the original Bark API (`prompt`, `voice`, `do_sample`, `fine_temperature`,
`coarse_temperature`, `batch_chunk_size`). Only pydantic here: `model_server.schema` re-exports these
names and adds the checks that need the server's settings.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from .formats import AudioFormat

# At least 0.01: logits divided by a near-zero temperature overflow to inf and sampling fails
# (found by the schemathesis fuzz tests: 5e-324 was a 500); 0.01 is already greedy in practice.
Temperature = Annotated[float, Field(ge=0.01, le=2, strict=True)]

DEFAULT_VOICE = "v2/en_speaker_1"


class SynthesisRequest(BaseModel):
    """One v1 instance: a text to speak and how."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr = Field(description="text to speak, any length up to the server's limit")
    voice: StrictStr = Field(DEFAULT_VOICE, description="a voice preset; GET /v1/voices lists them")
    do_sample: StrictBool = Field(True, description="sample (natural) or decode greedily (repeatable)")
    semantic_temperature: Temperature = 0.7
    coarse_temperature: Temperature = 0.7
    fine_temperature: Temperature = 0.5
    batch_chunk_size: StrictInt | None = Field(
        None, description="words per generated chunk; whole sentences are packed up to it"
    )
    format: AudioFormat = "wav"
    seed: StrictInt | None = Field(None, ge=0, le=2**32 - 1, description="fixes sampling for repeatable audio")


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the field the way a client wrote it (e.g. instances[0].voice)."""
    lines = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path or 'body'}: {item['msg']}")
    return "; ".join(lines)
