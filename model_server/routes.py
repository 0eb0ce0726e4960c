"""Extra HTTP routes on KServe's own FastAPI app (its supported way to add endpoints); ours at KServe's paths too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .kserve_routes import override_kserve_routes
from .model import BarkTTS
from .openai_speech.api_router import register_speech_route
from .voices import VOICES_ROUTE


def register_routes(app: FastAPI, model: BarkTTS) -> None:
    async def list_voices() -> dict[str, Any]:
        """The voice presets this model has, with their language, and the OpenAI-name aliases."""
        assert model.engine is not None
        return {"voices": model.engine.voices.describe(), "aliases": model.engine.voices.aliases}

    app.add_api_route(VOICES_ROUTE, list_voices, methods=["GET"], tags=["voices"])
    # KServe-style: the same listing under the model's own path.
    app.add_api_route(f"/v1/models/{model.name}/voices", list_voices, methods=["GET"], tags=["voices"])
    register_speech_route(app, model)
    # Before ModelServer.start() mounts KServe's routes: ours match first at the same paths.
    override_kserve_routes(app, model)
