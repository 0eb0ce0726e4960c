"""The wire format of the voices API (`/v1/audio/voices`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from bark_common.schema import VOICE_NAME_PATTERN, Language

MAX_CONSENT_CHARS = 2_000
MAX_DESCRIPTION_CHARS = 500


class VoiceFields(BaseModel):
    """A new voice's fields, the same as JSON or as multipart form fields."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(
        pattern=VOICE_NAME_PATTERN,
        description="1-64 letters, digits, '-', '_'; not a preset's, an alias's or 'random'",
    )
    consent: StrictStr = Field(
        min_length=1,
        max_length=MAX_CONSENT_CHARS,
        description="required: a statement that the speaker agreed to this use of their voice (stored with it)",
    )
    language: Language | None = Field(None, description="the voice's language, one of Bark's 13 (default: English)")
    description: StrictStr | None = Field(None, max_length=MAX_DESCRIPTION_CHARS, description="what it sounds like")

    @field_validator("consent")
    @classmethod
    def _says_something(cls, consent: str) -> str:
        if not consent.strip():
            raise ValueError("must state that the speaker agreed (not blank)")
        return consent


class VoiceUpload(VoiceFields):
    """`POST /v1/audio/voices` as JSON: the fields and the speaker prompt's `.npz`, base64."""

    npz_base64: StrictStr = Field(
        min_length=1,
        description="the speaker prompt: an .npz with semantic_prompt (S,), coarse_prompt (2, N), fine_prompt (8, N)",
    )


class PublishRequest(BaseModel):
    """`PATCH /v1/audio/voices/{name}` (admin keys only)."""

    model_config = ConfigDict(extra="forbid")

    published: StrictBool = Field(description="true: every API key may use the voice; false: only its owner")


class VoiceEntry(BaseModel):
    """One voice in the listing: a preset (name, language), or a custom voice (`custom: true`)."""

    name: str
    language: str | None = None
    language_name: str = ""
    custom: bool | None = Field(None, description="true for a custom voice (absent for a preset)")
    description: str | None = None
    created_at: str | None = None
    published: bool | None = None
    consent: str | None = None
    semantic_tokens: int | None = Field(None, description="on upload: the prompt's semantic tokens")
    frames: int | None = Field(None, description="on upload: the prompt's coarse and fine frames")
    own: bool | None = Field(None, description="a custom voice of the calling key (else a published one)")
    owner: str | None = Field(None, description="admin keys only: the owner's hash")


class VoiceListing(BaseModel):
    """`GET /v1/audio/voices`: presets, then the custom voices the calling key may use."""

    voices: list[VoiceEntry]
    aliases: dict[str, str] = Field(description="OpenAI's voice names and the presets they stand for")
    random: str = Field(description="the voice name that means no prompt: Bark makes up a speaker")
