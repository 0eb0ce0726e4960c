"""Extra HTTP routes on KServe's own FastAPI app (its supported way to add endpoints); ours at KServe's paths too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from model_server.http.kserve_routes import override_kserve_routes
from model_server.http.openai_speech.api_router import register_speech_route
from model_server.model import BarkTTS
from model_server.paths import MODEL_VOICES_PATH, VOICES_PATH


def register_routes(app: FastAPI, model: BarkTTS) -> None:
    """Our routes over the loaded model's synthesis service (load() first)."""
    synthesis = model.service

    async def list_voices() -> dict[str, Any]:
        """The voice presets this model has, with their language, and the OpenAI-name aliases."""
        return synthesis.describe_voices()

    app.add_api_route(VOICES_PATH, list_voices, methods=["GET"], tags=["voices"])
    # KServe-style: the same listing under the model's own path.
    app.add_api_route(MODEL_VOICES_PATH.format(model_name=model.name), list_voices, methods=["GET"], tags=["voices"])
    register_speech_route(app, synthesis, lambda: model.ready)
    # Before ModelServer.start() mounts KServe's routes: ours match first at the same paths.
    override_kserve_routes(app, model)
