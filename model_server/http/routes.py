"""Extra HTTP routes on KServe's own FastAPI app (its supported way to add endpoints); ours at KServe's paths too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from bark_common.errors import NotFound
from model_server.http.kserve_routes import override_kserve_routes
from model_server.http.openai_speech.api_router import register_speech_route
from model_server.http.openapi import ErrorResponse
from model_server.http.voices.api_router import register_voice_routes
from model_server.model import BarkTTS
from model_server.paths import REQUEST_PROGRESS_PATH
from model_server.progress import MAX_ID_CHARS


class RequestProgressResponse(BaseModel):
    """How far one request is on this replica."""

    request_id: str
    chunks_done: int = Field(description="chunks generated so far")
    chunks_total: int = Field(description="chunks the request's text was split into (all instances)")
    finished: bool = Field(description="every chunk has ended (generated, failed or cancelled)")
    elapsed_s: float = Field(description="seconds since the request's chunks were queued (until finished)")


def register_routes(app: FastAPI, model: BarkTTS) -> None:
    """Our routes over the loaded model's synthesis service (load() first)."""
    synthesis = model.service
    register_voice_routes(app, synthesis, model.name)

    async def request_progress(request_id: str) -> dict[str, Any]:
        """How far a request is (v1 predict or speech), by the `x-request-id` it was sent with.

        Per replica, so ask the one doing the work (the job sidecar asks its own pod's server). A
        request is known from the moment its chunks are queued until a minute after it finished.
        """
        if len(request_id) > MAX_ID_CHARS:
            raise NotFound(f"request ids longer than {MAX_ID_CHARS} characters are not tracked")
        progress = synthesis.progress.get(request_id)
        if progress is None:
            raise NotFound(
                f"no request {request_id!r} on this replica: not queued yet, finished over "
                f"{synthesis.progress.retention_s:g} s ago, or served by another replica"
            )
        return progress.describe()

    app.add_api_route(
        REQUEST_PROGRESS_PATH,
        request_progress,
        methods=["GET"],
        tags=["requests"],
        response_model=RequestProgressResponse,
        responses={
            401: {"model": ErrorResponse, "description": "missing or invalid API key (only when keys are configured)"},
            404: {"model": ErrorResponse, "description": "no such request on this replica"},
        },
    )
    register_speech_route(app, synthesis, lambda: model.ready)
    # Before ModelServer.start() mounts KServe's routes: ours match first at the same paths.
    override_kserve_routes(app, model)
