"""Hypothesis-mangled speaker prompts: the reader answers a 400 or a valid prompt, never anything else;
over HTTP every upload is a 201 or a 4xx, never a 5xx, and the server stays healthy.

The mangling works on a real Bark-shaped `.npz` (its zip structure and `.npy` headers included): bytes
flipped, cut, repeated or inserted anywhere, so the parser meets broken zip directories, CRCs that do
not match, `.npy` headers that lie about their shape or dtype, and truncated members.
"""

from __future__ import annotations

import base64
import itertools

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bark_common.errors import InvalidInput
from model_server.generation.speaker_prompt import SpeakerPrompt, read_npz
from tests.fuzz.conftest import assert_healthy
from tests.serving import RunningServer
from tests.voice_files import LIMITS, MAX_BYTES, bark_arrays, savez

VALID = savez(bark_arrays(tokens=60, frames=90))
names = (f"fuzzed-{number}" for number in itertools.count())


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """The valid file with a few edits: a byte changed, a span cut, repeated or inserted."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "cut", "repeat", "insert", "truncate"]))
        if edit == "flip" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[where : where + draw(st.integers(1, 64))]
        elif edit == "repeat":
            data[where:where] = data[where : where + draw(st.integers(1, 64))]
        elif edit == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[where:]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=mangled())
def test_the_reader_answers_a_400_or_a_valid_prompt_for_any_mangled_file(data: bytes) -> None:
    try:
        prompt = read_npz(data, LIMITS, MAX_BYTES, "file")
    except InvalidInput as error:
        assert error.param == "file" and str(error).startswith("file: ")
        return
    assert isinstance(prompt, SpeakerPrompt)
    prompt.check(LIMITS, "file")


def test_mangled_uploads_are_never_a_server_error(fuzz_server: RunningServer) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as client:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(data=mangled(), as_json=st.booleans())
        def upload(data: bytes, as_json: bool) -> None:
            fields = {"name": next(names), "consent": "The speaker agreed."}
            if as_json:
                response = client.post(
                    "/v1/audio/voices", json={**fields, "npz_base64": base64.b64encode(data).decode()}
                )
            else:
                response = client.post("/v1/audio/voices", data=fields, files={"file": ("v.npz", data)})
            assert response.status_code in (201, 400), response.text
            if response.status_code == 400:
                assert response.json()["error"]["param"] in ("file", "npz_base64")

        upload()
    assert_healthy(fuzz_server)
