"""KServe's own routes on our server: those a one-model Bark replica serves, made truthful; the rest say 404.

KServe mounts its v1 and v2 protocol routes while `ModelServer.start()` builds the app, with no option
to leave any out. Routes match in the order they were added, so `override_kserve_routes`, called
before the start, puts ours first at the same paths and KServe's are never reached.
`openapi.drop_not_served` takes KServe's description of the routes we do not serve out of the document.

Off, answering 404 with the reason:

- The model repository extension (`POST /v2/repository/models/{name}/load` and `/unload`). A replica
  serves one model, loaded and warmed up once at start; KServe's controller never calls these for an
  InferenceService (only its multi-model agent does, which this server is not built for). Left on,
  one unauthenticated call (or any valid key) unloaded the model: `/` stayed live, readiness failed
  for good, and `load` could not bring it back, so the pod was dead until deleted. To change the
  model, roll out a new revision.
- `:explain` (Bark has no explainer: KServe answered 500), v2 `infer` (tensors; Bark takes text on
  v1 predict and `/v1/audio/speech`) and model versions (KServe answered 501 for a client's choice).

Made truthful:

- `GET /v2/health/ready` is 200 only while the model is ready (KServe said ready in any state).
- `GET /v2` no longer lists the repository extension.
- `GET /v2/models/{name}` and `/ready` with `?model_version=` answer 404 (one version only), not 501.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from kserve.errors import ModelNotFound, ModelNotReady
from kserve.model import BaseKServeModel, InferenceModel

REPOSITORY_OFF = (
    "the model repository extension is off on this server: the model is loaded once at start and cannot "
    "be loaded or unloaded over HTTP (roll out a new revision to change it)"
)
NO_VERSIONS = "model versions are not supported: each model has exactly one; leave the version out"

#: (method, path) of KServe routes this server does not serve, with the reason its 404 gives.
NOT_SERVED: dict[tuple[str, str], str] = {
    ("POST", "/v2/repository/models/{model_name}/load"): REPOSITORY_OFF,
    ("POST", "/v2/repository/models/{model_name}/unload"): REPOSITORY_OFF,
    ("POST", "/v1/models/{model_name}:explain"): "explain is not served: this model has no explainer; use :predict",
    ("POST", "/v2/models/{model_name}/infer"): (
        "the v2 tensor protocol is not served: Bark takes text; "
        "use POST /v1/models/{model_name}:predict or POST /v1/audio/speech"
    ),
    ("POST", "/v2/models/{model_name}/versions/{model_version}/infer"): NO_VERSIONS,
    ("GET", "/v2/models/{model_name}/versions/{model_version}"): NO_VERSIONS,
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"): NO_VERSIONS,
}

Endpoint = Callable[..., Awaitable[Any]]


def not_found(message: str) -> JSONResponse:
    return JSONResponse(status_code=404, content={"error": message})


def _not_served(message: str) -> Endpoint:
    async def not_served() -> JSONResponse:
        return not_found(message)

    return not_served


def override_kserve_routes(app: FastAPI, model: BaseKServeModel) -> None:
    """Serve our answers at KServe's paths; call before `ModelServer.start()` mounts KServe's."""

    def named(model_name: str) -> BaseKServeModel:
        if model_name != model.name:
            raise ModelNotFound(model_name)  # KServe's handler: 404
        return model

    async def server_ready() -> Any:
        """Ready only while the model is (KServe's own answer was yes in any state)."""
        if await model.healthy():
            return {"ready": True}
        message = f"model {model.name} is not ready (loading, or shutting down)"
        return JSONResponse(status_code=503, content={"error": message})

    async def server_metadata() -> dict[str, Any]:
        return {"name": "kserve", "version": metadata.version("kserve"), "extensions": []}

    async def model_metadata(model_name: str, model_version: str | None = None) -> Any:
        if model_version:
            return not_found(NO_VERSIONS)
        found = named(model_name)
        inference = isinstance(found, InferenceModel)
        return {
            "name": model_name,
            "versions": None,
            "platform": "",
            "inputs": found.get_input_types() if inference else [],
            "outputs": found.get_output_types() if inference else [],
        }

    async def model_ready(model_name: str, model_version: str | None = None) -> Any:
        if model_version:
            return not_found(NO_VERSIONS)
        if not await named(model_name).healthy():
            raise ModelNotReady(model_name)  # KServe's handler: 503, as a readiness probe expects
        return {"name": model_name, "ready": True}

    # Not in the OpenAPI document: KServe's description of these routes (the same answers) is kept.
    add = app.add_api_route
    add("/v2/health/ready", server_ready, methods=["GET"], include_in_schema=False)
    add("/v2", server_metadata, methods=["GET"], include_in_schema=False)
    add("/v2/models/{model_name}", model_metadata, methods=["GET"], include_in_schema=False)
    add("/v2/models/{model_name}/ready", model_ready, methods=["GET"], include_in_schema=False)
    for (method, path), message in NOT_SERVED.items():
        add(path, _not_served(message), methods=[method], include_in_schema=False)
