"""Extra HTTP routes on KServe's own FastAPI app (its supported way to add endpoints); ours at KServe's paths too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from model_server.http.kserve_routes import override_kserve_routes
from model_server.http.openai_speech.api_router import register_speech_route
from model_server.model import BarkTTS
from model_server.paths import MODEL_VOICES_PATH, VOICES_PATH


def register_routes(app: FastAPI, model: BarkTTS) -> None:
    async def list_voices() -> dict[str, Any]:
        """The voice presets this model has, with their language, and the OpenAI-name aliases."""
        assert model.engine is not None
        return {"voices": model.engine.voices.describe(), "aliases": model.engine.voices.aliases}

    app.add_api_route(VOICES_PATH, list_voices, methods=["GET"], tags=["voices"])
    # KServe-style: the same listing under the model's own path.
    app.add_api_route(MODEL_VOICES_PATH.format(model_name=model.name), list_voices, methods=["GET"], tags=["voices"])
    register_speech_route(app, model)
    # Before ModelServer.start() mounts KServe's routes: ours match first at the same paths.
    override_kserve_routes(app, model)
