"""The wire format of the v1 predict API: what a request may hold and what comes back.

Field names match the original Bark API (`prompt`, `voice`, `do_sample`, `fine_temperature`,
`coarse_temperature`, `batch_chunk_size`), so its clients work unchanged. Bounds that operators may
tune (prompt length, chunk size range) live in `Settings` and are checked by `parse_predict_body`.
The webhook sidecar imports the request model from `bark_common.schema` (one definition).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bark_common.errors import InvalidInput

# The request schema lives in bark_common (pydantic only), so the webhook sidecar can validate jobs
# without importing kserve or torch; these names stay importable from here.
from bark_common.schema import DEFAULT_VOICE as DEFAULT_VOICE
from bark_common.schema import Segment as Segment
from bark_common.schema import SynthesisRequest as SynthesisRequest
from bark_common.schema import Temperature as Temperature
from bark_common.schema import Turn, invalid_input_from
from model_server.config import Settings
from model_server.generation.audio import AudioFormat
from model_server.generation.languages import resolve_language
from model_server.generation.limits import check_chunk_words as check_chunk_words
from model_server.generation.limits import check_words_per_request


class SynthesisResult(BaseModel):
    """One v1 prediction."""

    audio: str = Field(description="base64 of the encoded audio file")
    format: AudioFormat
    sample_rate: int
    duration_s: float
    chunks: int
    segments: list[Segment] | None = Field(
        None, description="with `timestamps`: every sentence's turn, voice, text and times, in order"
    )
    captions: str | None = Field(None, description="with `captions`: the segments as SRT or WebVTT text")
    saved_voice: str | None = Field(None, description="with `save_voice`: the name the voice was stored under")


class PredictRequest(BaseModel):
    """The v1 body. The original API's flat `{"prompt": ...}` is accepted too."""

    model_config = ConfigDict(extra="forbid")

    instances: list[SynthesisRequest] = Field(min_length=1)


def parse_predict_body(body: Any, settings: Settings) -> list[SynthesisRequest]:
    """Validate a v1 body into instances, raising InvalidInput (HTTP 400) that names the field."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object with an 'instances' list or a 'prompt'", param=None)
    if "instances" not in body and ("prompt" in body or "turns" in body):
        body = {"instances": [body]}
    if "instances" in body and not isinstance(body["instances"], list):
        raise InvalidInput("instances: must be a list of objects", param="instances")
    try:
        request = PredictRequest.model_validate(body)
    except ValidationError as error:
        raise invalid_input_from(error) from None
    if len(request.instances) > settings.max_instances:
        raise InvalidInput(
            f"instances: at most {settings.max_instances} per request (max_instances)", param="instances"
        )
    for index, instance in enumerate(request.instances):
        _check_bounds(instance, f"instances[{index}]", settings)
    check_total_words(request.instances, settings, "instances")
    return request.instances


def check_total_words(instances: list[SynthesisRequest], settings: Settings, field: str) -> None:
    """One request's words over all its instances and turns, each counted in its language (an alias
    voice counts as English: CJK text is counted by its characters whatever the language)."""
    texts = (
        (turn.text, resolve_language(turn.language, turn.voice))
        for instance in instances
        for turn in instance.spoken_turns()
    )
    check_words_per_request(texts, settings.max_words_per_request, field)


def _check_bounds(instance: SynthesisRequest, where: str, settings: Settings) -> None:
    check_text_or_turns(instance.prompt, instance.turns, settings, f"{where}.prompt", f"{where}.turns")
    check_chunk_words(instance.batch_chunk_size, settings, f"{where}.batch_chunk_size")


def check_text_or_turns(
    text: str | None, turns: list[Turn] | None, settings: Settings, text_field: str, turns_field: str
) -> None:
    """A text, or a dialogue's turns, within the operator's bounds: not empty, at most `max_prompt_chars`
    characters (over all turns), at most `max_turns` turns; each 400 names the field at fault."""
    if turns is None:
        _check_text(text or "", settings, text_field)
        return
    if len(turns) > settings.max_turns:
        raise InvalidInput(
            f"{turns_field}: {len(turns)} turns is over the limit of {settings.max_turns} (max_turns)",
            param=turns_field,
        )
    for index, turn in enumerate(turns):
        if not turn.text.strip():
            field = f"{turns_field}[{index}].text"
            raise InvalidInput(f"{field}: must not be empty", param=field)
    characters = sum(len(turn.text) for turn in turns)
    if characters > settings.max_prompt_chars:
        raise InvalidInput(
            f"{turns_field}: {characters} characters in all is over the limit of {settings.max_prompt_chars} "
            "(max_prompt_chars)",
            param=turns_field,
        )


def _check_text(text: str, settings: Settings, field: str) -> None:
    if not text.strip():
        raise InvalidInput(f"{field}: must not be empty", param=field)
    if len(text) > settings.max_prompt_chars:
        raise InvalidInput(
            f"{field}: {len(text)} characters is over the limit of {settings.max_prompt_chars} (max_prompt_chars)",
            param=field,
        )
