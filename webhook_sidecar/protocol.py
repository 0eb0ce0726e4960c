"""The wire format of the job API: what `/async_predict` and a CloudEvent carry, what comes back.

`model_input` is the model server's own `SynthesisRequest` (bark_common.schema, one definition), so a job accepts
exactly what `/v1/models/bark:predict` accepts as an instance.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bark_common.schema import SynthesisRequest

from .urls import UnsafeUrl, parse_webhook_url

JobState = Literal["queued", "running", "succeeded", "failed", "delivering", "delivered", "dead", "cancelled"]
Outcome = Literal["succeeded", "failed"]

#: CloudEvent types. Results reuse the request's prefix so one Trigger filter family covers them.
EVENT_REQUESTED = "com.barkkserve.tts.requested"
EVENT_ACCEPTED = "com.barkkserve.tts.accepted"
EVENT_COMPLETED = "com.barkkserve.tts.completed"
EVENT_FAILED = "com.barkkserve.tts.failed"


class AsyncPredictRequest(BaseModel):
    """The original API's async body: one synthesis request and where to send its result."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_input: SynthesisRequest
    webhook_endpoint: str = Field(description="http(s) URL that receives the result as a CloudEvent")

    @field_validator("webhook_endpoint")
    @classmethod
    def _is_http_url(cls, value: str) -> str:
        # Syntax here (a pydantic error names the field); the address check needs DNS, see urls.py.
        try:
            parse_webhook_url(value)
        except UnsafeUrl as error:
            raise ValueError(str(error).removeprefix("webhook_endpoint: ")) from None
        return value


class JobAccepted(BaseModel):
    """The 202 answer: the job is stored and will be delivered."""

    job_id: str
    status_url: str


class JobProgress(BaseModel):
    """How far the model server is with a job's text, in chunks (Bark speaks one chunk per call).

    Also parses the model server's `GET /v1/requests/{id}/progress` answer (strict: a malformed one is ignored).
    """

    model_config = ConfigDict(strict=True)

    chunks_done: int = Field(ge=0)
    chunks_total: int = Field(ge=0)

    @model_validator(mode="after")
    def _done_within_total(self) -> JobProgress:
        if self.chunks_done > self.chunks_total:
            raise ValueError("chunks_done exceeds chunks_total")
        return self


class JobStatus(BaseModel):
    """What `GET /jobs/{id}` shows. Never the audio: that goes only to the webhook."""

    job_id: str
    state: JobState
    outcome: Outcome | None = Field(None, description="set once the model has answered")
    error: str | None = Field(None, description="why the job failed (outcome `failed`)")
    attempts: int = Field(description="model calls counted against max_attempts (503s are not)")
    delivery_attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    delivered_at: str | None
    next_attempt_at: str | None = Field(None, description="when the next delivery try is due")
    last_error: str | None = Field(description="the latest problem (model or webhook); cleared once delivered")
    last_status_code: int | None = Field(None, description="HTTP status of the last webhook answer")
    webhook_host: str
    progress: JobProgress | None = Field(
        None, description="the model server's progress on the current run; null until it reports"
    )
    cancel_requested: bool = Field(
        False, description="the caller cancelled it (DELETE): a `running` job stops within about a second"
    )


class JobFailure(BaseModel):
    """The data of a `.failed` CloudEvent."""

    error: str
    status_code: int | None = Field(None, description="the model server's HTTP status, if it answered")
