"""A finished job's captions (issue #24): the SRT or WebVTT text the model made beside the audio.

A job asks for them as any request does (`model_input.captions: "srt" | "vtt"`, with `timestamps` for
the segments); the model's prediction carries them in `captions`, which the job keeps with the rest of
its result (everything but the audio). `GET /jobs/{id}/captions` hands them out as a caption file, so a
player can load them next to the audio link without parsing the webhook again.
"""

from __future__ import annotations

from dataclasses import dataclass

from bark_common.errors import Conflict, NotFound

from .jobs import Job

#: The media types players expect for each caption format.
MEDIA_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt"}
_UNFINISHED = ("queued", "running")


@dataclass(frozen=True)
class CaptionFile:
    text: str
    media_type: str
    filename: str


def job_captions(job: Job) -> CaptionFile:
    """The job's captions, or why there are none: 409 while it runs or when it did not succeed, 404 when
    it never asked for them (`job.result` must be loaded)."""
    wanted = job.model_input.get("captions")
    if wanted not in MEDIA_TYPES:
        raise NotFound('this job asked for no captions (send "captions": "srt" or "vtt" in model_input)')
    if job.state in _UNFINISHED:
        raise Conflict(f"the job is {job.state}; its captions come with its result")
    if job.outcome != "succeeded" or job.result is None:
        raise Conflict(f"the job did not succeed ({job.outcome or job.state}): it has no captions")
    text = job.result.get("captions")
    if not isinstance(text, str):
        raise NotFound("the job's result holds no captions")
    return CaptionFile(text, f"{MEDIA_TYPES[wanted]}; charset=utf-8", f"{job.id}.{wanted}")
