"""KServe's own routes on our app: none can unload the model, none answers a client's mistake with a 5xx.

The app is built as the server builds it: our routes first, then KServe's mounted by its own
RESTServer code, with its exception handlers, over a stub engine (no weights).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer
from starlette.testclient import TestClient

from model_server.config import Settings
from model_server.http.errors import register_error_handlers
from model_server.http.kserve_routes import NOT_SERVED, REPOSITORY_OFF
from model_server.http.openapi import document_api
from model_server.http.routes import register_routes
from model_server.model import BarkTTS
from tests.stub_engine import StubEngine, stub_model


def build_app() -> tuple[FastAPI, BarkTTS, ModelRepository]:
    settings = Settings(warmup=False, max_wait_ms=1)
    engine = StubEngine(settings)
    engine.voices.describe = list  # type: ignore[attr-defined]  # the voices route lists nothing here
    engine.voices.aliases = {}  # type: ignore[attr-defined]
    model = stub_model(settings, engine)
    app = FastAPI()
    register_error_handlers(app)
    register_routes(app, model)
    document_api(app, settings)
    registry = ModelRepository()
    registry.update(model)
    # What ModelServer.start() does to the app, with KServe's own code.
    rest = RESTServer("unused", DataPlane(registry), ModelRepositoryExtension(registry), http_port=0)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    return app, model, registry


@pytest.fixture
def served() -> Iterator[tuple[TestClient, BarkTTS, ModelRepository, FastAPI]]:
    app, model, registry = build_app()
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, model, registry, app


def mounted_operations(routes: list[Any]) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, including those of included routers (kept apart by FastAPI >= 0.165)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from mounted_operations(included.routes)
        elif isinstance(route, APIRoute):
            for method in sorted(route.methods):
                yield method, route.path


def concrete(path: str, model_name: str) -> str:
    return re.sub(r"\{model_version\}", "1", path.replace("{model_name}", model_name))


def test_unload_and_load_are_refused_and_the_model_stays(served):
    client, model, registry, _ = served
    for action in ("unload", "load"):
        for name in ("bark", "x"):
            response = client.post(f"/v2/repository/models/{name}/{action}")
            assert response.status_code == 404
            assert response.json() == {"error": REPOSITORY_OFF}
    assert registry.get_model("bark") is model and model.ready
    assert client.get("/v1/models/bark").json() == {"name": "bark", "ready": True}
    assert client.post("/v1/models/bark:predict", json={"prompt": "Still here."}).status_code == 200


def test_every_mounted_route_answers_a_client_mistake_with_a_4xx_never_a_5xx(served):
    client, _, _, app = served
    operations = set(mounted_operations(app.router.routes))
    assert set(NOT_SERVED) <= operations, "KServe's routes moved: update kserve_routes.NOT_SERVED"
    for method, path in sorted(operations):
        if path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            continue
        for name in ("bark", "no-such-model"):
            for query in ("", "?model_version=1"):
                url = concrete(path, name) + query
                response = client.request(method, url, json={"inputs": []} if method == "POST" else None)
                assert response.status_code < 500, f"{method} {url}: {response.status_code} {response.text}"
                if response.status_code >= 400:
                    assert response.json().get("error"), f"{method} {url} says why: {response.text}"


@pytest.mark.parametrize(("method", "path"), sorted(NOT_SERVED))
def test_routes_not_served_say_why_and_are_not_documented(served, method, path):
    client, _, _, app = served
    response = client.request(method, concrete(path, "bark"))
    assert (response.status_code, response.json()) == (404, {"error": NOT_SERVED[method, path]})
    assert method.lower() not in app.openapi()["paths"].get(path, {})


@pytest.mark.parametrize(
    "path",
    ["/v2/models/x?model_version=1", "/v2/models/bark?model_version=1", "/v2/models/bark/ready?model_version=2"],
)
def test_model_versions_are_a_404_not_a_501(served, path):
    client, _, _, _ = served
    response = client.get(path)
    assert response.status_code == 404
    assert "versions are not supported" in response.json()["error"]


def test_v2_readiness_tells_the_truth_about_the_model(served):
    client, model, _, _ = served
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/bark/ready").json() == {"name": "bark", "ready": True}
    model.stop()  # SIGTERM: draining, not ready any more
    for path in ("/v2/health/ready", "/v2/models/bark/ready", "/v1/models/bark"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "not ready" in response.json()["error"]
    assert client.get("/v2/health/live").json() == {"live": True}, "alive, so the pod is not restarted mid-drain"


def test_v2_metadata_no_longer_offers_the_repository_extension(served):
    client, _, _, _ = served
    metadata = client.get("/v2").json()
    assert metadata["extensions"] == []
    assert metadata["name"] == "kserve" and metadata["version"]
    assert client.get("/v2/models/bark").json() == {
        "name": "bark",
        "versions": None,
        "platform": "",
        "inputs": [],
        "outputs": [],
    }
    assert client.get("/v2/models/x").status_code == 404
