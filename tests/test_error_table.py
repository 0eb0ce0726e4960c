"""The error table (`bark_common.errors`) and its three wire formats: one row decides them all."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bark_common.errors import (
    BY_STATUS,
    BodyTooLarge,
    Conflict,
    Forbidden,
    GenerationFailed,
    Gone,
    InvalidInput,
    NotFound,
    Overloaded,
    RequestTimedOut,
    ServingError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    describe_error,
)
from bark_common.schema import invalid_input_from
from model_server.http.errors import openai_error, v1_error_response
from model_server.http.outcomes import DEFAULT_REASONS
from model_server.schema import PredictRequest
from webhook_sidecar.api import error_response

ONE_OF_EACH: list[ServingError] = [
    InvalidInput("voice: unknown", param="voice"),
    Unauthorized("no key"),
    Forbidden("published: admin keys only"),
    NotFound("no job with this id"),
    Conflict("Idempotency-Key: already used"),
    Gone("expired"),
    BodyTooLarge("body: too large"),
    TooManyRequests("100 unfinished jobs for this API key", retry_after_s=30),
    Unavailable("starting", retry_after_s=5),
    Overloaded("queue full", retry_after_s=3),
    RequestTimedOut("too slow"),
    GenerationFailed("boom", request_id="abc123"),
]


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_every_error_type_is_exercised_here():
    """A new error type must join ONE_OF_EACH, so the wire formats below are checked for it too."""
    defined = {cls for cls in _all_subclasses(ServingError) if cls.__module__ == "bark_common.errors"}
    assert defined == {type(error) for error in ONE_OF_EACH}


@pytest.mark.parametrize("error", ONE_OF_EACH, ids=lambda error: type(error).__name__)
def test_v1_and_sidecar_bodies_agree_with_the_row(error):
    row = describe_error(error)
    v1, sidecar = v1_error_response(error), error_response(error)
    assert v1.status_code == sidecar.status_code == row.status
    assert json.loads(v1.body)["error"] == json.loads(sidecar.body)["error"] == str(error)
    for name, value in error.http_headers().items():
        assert v1.headers[name] == sidecar.headers[name] == value


@pytest.mark.parametrize("error", ONE_OF_EACH, ids=lambda error: type(error).__name__)
def test_openai_body_carries_the_rows_type_and_code(error):
    row = describe_error(error)
    param = error.param if isinstance(error, InvalidInput) else None
    body = openai_error(row, str(error), param)["error"]
    assert (body["type"], body["code"], body["param"], body["message"]) == (row.kind, row.code, param, str(error))


def test_retry_after_and_authenticate_headers_come_from_the_error():
    assert Overloaded("full", retry_after_s=7).http_headers() == {"retry-after": "7"}
    assert Unavailable("draining", retry_after_s=5).http_headers() == {"retry-after": "5"}
    assert Unauthorized("no key").http_headers() == {"www-authenticate": "Bearer"}
    assert InvalidInput("x: bad", param="x").http_headers() == {}


def test_every_status_has_a_bounded_metric_reason():
    statuses = {describe_error(error).status for error in ONE_OF_EACH}
    assert statuses <= set(BY_STATUS)
    assert all(DEFAULT_REASONS[status] == BY_STATUS[status].reason for status in statuses)


def test_unknown_exceptions_are_a_generation_error_and_timeouts_a_504():
    assert describe_error(KeyError("x")).status == 500
    assert describe_error(TimeoutError()).status == 504


def test_invalid_input_must_say_which_field_it_blames():
    with pytest.raises(TypeError):
        InvalidInput("voice: unknown")  # type: ignore[call-arg]
    assert InvalidInput("body is not JSON", param=None).param is None


def test_validation_errors_blame_the_first_field_as_the_client_wrote_it():
    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate({"instances": [{"prompt": "hi", "voice": 3, "colour": "blue"}]})
    error = invalid_input_from(caught.value)
    assert error.param == "instances[0].voice"
    assert "instances[0].voice:" in str(error) and "instances[0].colour:" in str(error)


def test_a_body_level_validation_error_blames_no_field():
    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate([1, 2])
    error = invalid_input_from(caught.value)
    assert error.param is None
    assert str(error).startswith("body:")
