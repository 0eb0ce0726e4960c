"""The v1 predict API over real HTTP: audio that decodes, and a clear 400 for every kind of bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

PREDICT = "/v1/models/bark:predict"


def decode(prediction: dict) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(base64.b64decode(prediction["audio"])))


def test_readiness_reports_the_model_ready(server):
    with server.client() as client:
        assert client.get("/v1/models/bark").json() == {"name": "bark", "ready": True}


def test_predict_returns_audio_that_decodes_with_the_reported_shape(server):
    with server.client() as client:
        response = client.post(PREDICT, json={"instances": [{"prompt": "Hello there. How are you today?"}]})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    samples, rate = decode(prediction)
    assert prediction["format"] == "wav"
    assert rate == prediction["sample_rate"] == 24_000
    assert len(samples) / rate == pytest.approx(prediction["duration_s"], abs=1e-3)
    assert prediction["chunks"] >= 1
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0


def test_flat_body_of_the_original_api_is_accepted(server):
    with server.client() as client:
        response = client.post(PREDICT, json={"prompt": "Just a flat body.", "voice": "v2/en_speaker_3"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_several_instances_get_one_prediction_each_in_order(server):
    instances = [
        {"prompt": "Short.", "do_sample": False},
        {
            "prompt": "A much longer text with many more words in it. And a second sentence.",
            "do_sample": False,
        },
    ]
    with server.client() as client:
        response = client.post(PREDICT, json={"instances": instances})
    assert response.status_code == 200, response.text
    short, long = response.json()["predictions"]
    assert long["duration_s"] > short["duration_s"]


def test_flac_is_encoded_on_request(server):
    with server.client() as client:
        response = client.post(PREDICT, json={"instances": [{"prompt": "In flac please.", "format": "flac"}]})
    prediction = response.json()["predictions"][0]
    assert base64.b64decode(prediction["audio"])[:4] == b"fLaC"
    samples, rate = decode(prediction)
    assert rate == 24_000 and len(samples) > 0


def test_long_text_is_split_into_chunks_and_joined(server):
    sentences = [f"This is sentence number {n} of the story." for n in range(1, 7)]
    body = {"instances": [{"prompt": " ".join(sentences), "batch_chunk_size": 8, "do_sample": False}]}
    with server.client() as client:
        response = client.post(PREDICT, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["chunks"] == 6


def test_greedy_decoding_with_a_seed_is_repeatable(server):
    body = {"instances": [{"prompt": "Repeat after me.", "seed": 7}]}
    with server.client() as client:
        first = client.post(PREDICT, json=body).json()["predictions"][0]["audio"]
        second = client.post(PREDICT, json=body).json()["predictions"][0]["audio"]
    assert first == second


BAD_INSTANCES = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 20_001}, "max_prompt_chars"),
    ({"prompt": "hi", "voice": "v2/xx_speaker_99"}, "/v1/audio/voices"),
    ({"prompt": "hi", "fine_temperature": 0}, "fine_temperature"),
    ({"prompt": "hi", "coarse_temperature": 2.5}, "coarse_temperature"),
    ({"prompt": "hi", "coarse_temperature": "hot"}, "coarse_temperature"),
    ({"prompt": "hi", "batch_chunk_size": 0}, "batch_chunk_size"),
    ({"prompt": "hi", "batch_chunk_size": 10_000}, "batch_chunk_size"),
    ({"prompt": "hi", "format": "mp4"}, "format"),
    ({"prompt": 123}, "prompt"),
    ({"prompt": "hi", "do_sample": "yes"}, "do_sample"),
    ({"prompt": "hi", "voice": None}, "voice"),
    ({"prompt": "hi", "temprature": 0.5}, "temprature"),
]


@pytest.mark.parametrize(("instance", "named"), BAD_INSTANCES)
def test_bad_instance_is_a_400_naming_the_field(server, instance, named):
    with server.client() as client:
        response = client.post(PREDICT, json={"instances": [instance]})
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"instances": {"prompt": "hi"}}, "instances"),
        ({"instances": []}, "instances"),
        ({"instances": ["just a string"]}, "instances[0]"),
        ({"nothing": "here"}, "instances"),
        ([{"prompt": "a list body"}], "JSON object"),
        ({"instances": [{"prompt": "hi"}] * 17}, "max_instances"),
    ],
)
def test_bad_body_shape_is_a_400(server, body, named):
    with server.client() as client:
        response = client.post(PREDICT, json=body)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]


def test_body_that_is_not_json_is_a_400(server):
    with server.client() as client:
        response = client.post(PREDICT, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_voices_are_listed_with_their_language(server):
    with server.client() as client:
        voices = client.get("/v1/audio/voices").json()["voices"]
    names = {voice["name"] for voice in voices}
    assert {f"v2/en_speaker_{n}" for n in range(10)} <= names
    assert all(voice["name"].startswith(f"v2/{voice['language']}_speaker_") for voice in voices)
    assert len({voice["language"] for voice in voices}) == 13, "the tiny checkpoint has all of Bark's languages"


def test_every_outcome_is_counted_even_when_kserve_rejects_the_body(server):
    from tests.http.test_batching_http import metric

    series = 'bark_requests_total{code="400",reason="invalid_input",route="v1_predict"}'
    ok_series = 'bark_requests_total{code="200",reason="ok",route="v1_predict"}'
    before, ok_before = metric(server.url, series), metric(server.url, ok_series)
    with server.client() as client:
        assert (
            client.post(PREDICT, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
        )
        assert client.post(PREDICT, json={"instances": [{"prompt": ""}]}).status_code == 400
        assert client.post(PREDICT, json={"prompt": "Counted once."}).status_code == 200
    assert metric(server.url, series) == before + 2
    assert metric(server.url, ok_series) == ok_before + 1
