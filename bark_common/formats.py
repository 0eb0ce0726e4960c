"""The audio formats the service produces: one table, read by the model server and the sidecar.

The model server answers with these media types; the sidecar serves downloads with them. Keeping one
table means a new format cannot be served as `application/octet-stream` by one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AudioFormat = Literal["wav", "flac", "mp3", "opus", "aac", "pcm"]


@dataclass(frozen=True)
class FormatInfo:
    content_type: str
    streams: bool


FORMATS: dict[str, FormatInfo] = {
    "wav": FormatInfo("audio/wav", streams=True),
    "flac": FormatInfo("audio/flac", streams=False),
    "mp3": FormatInfo("audio/mpeg", streams=True),
    "opus": FormatInfo("audio/ogg; codecs=opus", streams=True),
    "aac": FormatInfo("audio/aac", streams=False),
    "pcm": FormatInfo("audio/pcm", streams=True),
}

#: What a file of an unknown format is served as.
UNKNOWN_CONTENT_TYPE = "application/octet-stream"


def content_type(audio_format: str) -> str:
    """The media type of `audio_format` (`application/octet-stream` for a name not in the table)."""
    info = FORMATS.get(audio_format)
    return info.content_type if info is not None else UNKNOWN_CONTENT_TYPE
