"""Any Unicode text, in any of Bark's languages or none, on both APIs: a 200 with audio or a clear 400."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bark_common.schema import BARK_LANGUAGES
from tests.fuzz.conftest import PREDICT, assert_healthy
from tests.language_samples import SENTENCES
from tests.serving import RunningServer

SPEECH = "/v1/audio/speech"

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=120) | st.lists(
    st.sampled_from([s for sentences in SENTENCES.values() for s in sentences] + ["，", "。", " ", "...", "😀"]),
    max_size=4,
).map("".join)


@pytest.fixture(scope="module")
def client(fuzz_server: RunningServer) -> Any:
    with fuzz_server.client(timeout=60) as http:
        yield http


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, language=st.sampled_from([*BARK_LANGUAGES, None]), route=st.sampled_from([PREDICT, SPEECH]))
def test_any_text_in_any_language_is_spoken_or_refused_clearly(client: httpx.Client, text, language, route) -> None:
    fields = {} if language is None else {"language": language}
    if route == PREDICT:
        body = {"instances": [{"prompt": text, "do_sample": False, **fields}]}
    else:
        body = {"input": text, "voice": "alloy", "response_format": "wav", **fields}
    response = client.post(route, json=body)
    event(f"{route} {response.status_code}")
    assert response.status_code in (200, 400), f"{response.status_code} for {text!r}: {response.text[:300]}"
    if response.status_code == 400:
        assert response.text and ("error" in response.json())
    elif route == PREDICT:
        prediction = response.json()["predictions"][0]
        assert prediction["chunks"] >= 1 and prediction["duration_s"] > 0
    else:
        assert len(response.content) > 44, "a WAV with samples, not just a header"


def test_server_is_healthy_after_the_language_fuzz(fuzz_server: RunningServer, client: httpx.Client) -> None:
    assert_healthy(fuzz_server)
