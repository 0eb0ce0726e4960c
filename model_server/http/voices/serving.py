"""The voices API's logic: parse an upload (JSON or multipart), check it, and call the custom voices.

Everything is checked before anything is stored: the fields (pydantic: the name's pattern, a
consent statement, the language), then the name against presets, aliases and the caller's own voices
(400/409; 403 past `max_voices_per_key`), then the `.npz` itself (generation/speaker_prompt.py:
no pickles, integers, shapes, vocabularies, lengths, size). Store calls block, so routes run these
in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from bark_common.errors import InvalidInput
from bark_common.schema import invalid_input_from
from model_server.callers import Caller
from model_server.custom_voices import voice_entry
from model_server.generation.speaker_prompt import read_npz
from model_server.http.voices.protocol import PublishRequest, VoiceFields, VoiceUpload
from model_server.synthesis import SynthesisService

#: The multipart field that holds the `.npz`.
FILE_FIELD = "file"
JSON_FILE_FIELD = "npz_base64"


def parse_json_upload(body: bytes) -> tuple[VoiceFields, bytes]:
    """`POST /v1/audio/voices` as JSON: the fields and the decoded `.npz` (400 naming the field)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"body is not valid JSON: {error}", param=None) from None
    try:
        upload = VoiceUpload.model_validate(data)
    except ValidationError as error:
        raise invalid_input_from(error) from None
    try:
        npz = base64.b64decode(upload.npz_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{JSON_FILE_FIELD}: not valid base64", param=JSON_FILE_FIELD) from None
    return upload, npz  # a VoiceUpload is VoiceFields with the file


def parse_form_fields(fields: Mapping[str, str]) -> VoiceFields:
    """The multipart upload's text fields (the file travels apart)."""
    try:
        return VoiceFields.model_validate(dict(fields))
    except ValidationError as error:
        raise invalid_input_from(error) from None


class VoicesService:
    """What the voice routes ask of the synthesis service's custom voices."""

    def __init__(self, synthesis: SynthesisService):
        self.synthesis = synthesis
        self.voices = synthesis.voices

    def caller(self, headers: Mapping[str, str], required: bool = True) -> Caller:
        return self.synthesis.callers.of(headers, required)

    def upload(self, caller: Caller, fields: VoiceFields, npz: bytes, file_field: str) -> dict[str, Any]:
        """Check everything, then store; the stored voice as the listing shows it (and its lengths)."""
        self.voices.check_new(caller, fields.name)
        limits = self.synthesis.engine.prompt_limits
        prompt = read_npz(npz, limits, self.synthesis.settings.voice_max_bytes, file_field)
        record = self.voices.add(caller, fields.name, prompt, fields.consent, fields.language, fields.description)
        return {
            **voice_entry(record, caller),
            "semantic_tokens": prompt.semantic.shape[0],
            "frames": prompt.coarse.shape[1],
        }

    def download(self, caller: Caller, name: str, owner: str | None) -> bytes:
        return self.voices.download(caller, name, owner)

    def delete(self, caller: Caller, name: str, owner: str | None) -> None:
        self.voices.delete(caller, name, owner)

    def publish(self, caller: Caller, name: str, body: bytes, owner: str | None) -> dict[str, Any]:
        try:
            request = PublishRequest.model_validate(orjson.loads(body))
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"body is not valid JSON: {error}", param=None) from None
        except ValidationError as error:
            raise invalid_input_from(error) from None
        return voice_entry(self.voices.publish(caller, name, request.published, owner), caller)
