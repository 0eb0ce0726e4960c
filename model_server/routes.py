"""Extra HTTP routes on KServe's own FastAPI app (its supported way to add endpoints)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .model import BarkTTS
from .voices import VOICES_ROUTE


def register_routes(app: FastAPI, model: BarkTTS) -> None:
    async def list_voices() -> dict[str, Any]:
        """The voice presets this model has, with their language."""
        assert model.engine is not None
        return {"voices": model.engine.voices.describe()}

    app.add_api_route(VOICES_ROUTE, list_voices, methods=["GET"], tags=["voices"])
