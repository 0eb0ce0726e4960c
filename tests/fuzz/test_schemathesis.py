"""Schemathesis against the running server's own /openapi.json: every operation it lists, KServe's included.

The document describes the v1 predict body (model_server/http/openapi.py), so schemathesis generates
both bodies the schema allows and bodies it forbids. Our operations get every check: never a 5xx;
the status, content type and body of every answer are ones the document lists; a body the schema
forbids is refused (4xx). KServe's operations are our server's routes too: whatever a client sends
them, never a 5xx (the equivalent of `schemathesis run --checks not_a_server_error`).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import assert_healthy
from tests.serving import RunningServer

#: Our operations and the input modes worth generating for each, with every check. Operations
#: missing from the document (a route not built yet) skip; every other operation is swept below.
OPERATIONS = [
    ("POST", "/v1/models/{model_name}:predict", GenerationMode.POSITIVE),
    ("POST", "/v1/models/{model_name}:predict", GenerationMode.NEGATIVE),
    ("POST", "/v1/audio/speech", GenerationMode.POSITIVE),
    ("POST", "/v1/audio/speech", GenerationMode.NEGATIVE),
    ("GET", "/v1/audio/voices", GenerationMode.POSITIVE),
    ("POST", "/v1/audio/voices", GenerationMode.POSITIVE),
    ("POST", "/v1/audio/voices", GenerationMode.NEGATIVE),
    ("GET", "/v1/audio/voices/{name}", GenerationMode.POSITIVE),
    ("PATCH", "/v1/audio/voices/{name}", GenerationMode.POSITIVE),
    ("PATCH", "/v1/audio/voices/{name}", GenerationMode.NEGATIVE),
    ("DELETE", "/v1/audio/voices/{name}", GenerationMode.POSITIVE),
    ("GET", "/v1/requests/{request_id}/progress", GenerationMode.POSITIVE),
]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema(fuzz_server: RunningServer) -> Any:
    # schemathesis' own pytest loader (`from_fixture`) does not run on pytest 9 yet: plain strategies instead.
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=lambda value: str(value).split(".")[-1])
def test_our_operations_conform_and_never_fail(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema.find_operation_by_path(method, path)
    if operation is None:
        pytest.skip(f"{method} {path} is not in the server's OpenAPI document")

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    call()


def test_every_other_operation_never_answers_a_5xx(api_schema: Any) -> None:
    ours = {(method, path) for method, path, _ in OPERATIONS}
    swept = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in ours:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                case.call_and_validate(checks=[not_a_server_error], timeout=30)

            try:
                call()
            except Unsatisfiable:  # no parameters and no body: there is no invalid input to send
                assert mode is GenerationMode.NEGATIVE, operation.path
        swept.append(f"{operation.method.upper()} {operation.path}")
    # KServe's routes are in the document: the sweep reached them (the repository extension is not).
    assert {"GET /v2/health/ready", "GET /v2/models/{model_name}", "GET /v1/models/{model_name}"} <= set(swept)
    assert not any("/v2/repository/" in operation for operation in swept)


def test_server_is_healthy_after_schemathesis(fuzz_server: RunningServer) -> None:
    assert_healthy(fuzz_server)


def test_the_document_describes_dialogues_and_timed_answers_on_both_routes(fuzz_server: RunningServer) -> None:
    """So schemathesis generates turns, timestamps and captions, within the server's own bounds, and
    checks the JSON answer of the speech route against the prediction's schema."""
    document = httpx.get(fuzz_server.url + "/openapi.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    text = schemas["Turn"]["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, 300)
    for model in ("SynthesisRequest", "SpeechRequest"):
        properties = schemas[model]["properties"]
        turns = next(option for option in properties["turns"]["anyOf"] if option.get("type") == "array")
        assert turns["items"] == {"$ref": "#/components/schemas/Turn"} and turns["maxItems"] == 6
        assert {"turn_pause_ms", "timestamps", "captions"} <= set(properties)
    speech = document["paths"]["/v1/audio/speech"]["post"]
    assert speech["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SpeechRequest"
    }
    answer = speech["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/SynthesisResult"}
    assert "Segment" in schemas and "$defs" not in json.dumps(document), "every reference resolves from the root"
