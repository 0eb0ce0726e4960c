"""The voices API over real HTTP, against a server with API keys (two callers and an admin).

Uploads (multipart and JSON) become voices every route takes; an upload is the same voice as the same
arrays served as a preset file (seeded audio, byte for byte); every bad upload is a 400 and stores
nothing; a voice belongs to its key unless an admin key published it; `random` and `save_voice` keep a
voice just heard.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.serving import RunningServer, running_server
from tests.voice_files import BAD, bark_arrays, savez

PREDICT = "/v1/models/bark:predict"
SPEECH = "/v1/audio/speech"
VOICES = "/v1/audio/voices"
KEY_A, KEY_B, ADMIN = "key-a-0123456789", "key-b-0123456789", "key-admin-0123456789"
#: A preset written into the checkpoint from the same arrays the tests upload.
FILE_PRESET = "file/en_speaker_6"
ARRAYS = bark_arrays()
CONSENT = "The speaker agreed in writing on 2024-05-01 to this use of their voice."
#: Long enough for a first chunk to be kept as a voice (at least 20 semantic tokens at 6 a word).
SENTENCE = "Hello there, this sentence is long enough to keep as a voice."


def with_preset(source: Path, target: Path, name: str, arrays: dict[str, np.ndarray]) -> Path:
    """A copy of the checkpoint with one more preset, in the hub's layout (speaker_embeddings/*.npy)."""
    shutil.copytree(source, target)
    index = json.loads((target / "speaker_embeddings_path.json").read_text())
    index["repo_or_path"] = str(target)
    entry = {}
    for key, array in arrays.items():
        relative = f"speaker_embeddings/{name}_{key}.npy"
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        np.save(target / relative, array, allow_pickle=False)
        entry[key] = relative
    index[name] = entry
    (target / "speaker_embeddings_path.json").write_text(json.dumps(index))
    return target


@pytest.fixture(scope="module")
def voice_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def keyed_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, voice_store: Path):
    folder = tmp_path_factory.mktemp("with-preset")
    checkpoint = with_preset(tiny_checkpoint, folder / "checkpoint", FILE_PRESET, ARRAYS)
    env = {
        "BARK_API_KEYS": f"{KEY_A},{KEY_B}",
        "BARK_ADMIN_API_KEYS": ADMIN,
        "BARK_VOICE_STORE": str(voice_store),
        "BARK_MAX_VOICES_PER_KEY": "20",
    }
    with running_server(checkpoint, tmp_path_factory.mktemp("logs"), env=env) as server:
        yield server


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def upload(server: RunningServer, key: str, name: str, npz: bytes | None = None, **fields: Any) -> Any:
    data = {"name": name, "consent": CONSENT, **fields}
    with server.client() as client:
        return client.post(
            VOICES,
            headers=auth(key),
            data={k: v for k, v in data.items() if v is not None},
            files={"file": ("voice.npz", savez(ARRAYS) if npz is None else npz, "application/octet-stream")},
        )


def listing(server: RunningServer, key: str | None) -> list[dict[str, Any]]:
    with server.client() as client:
        response = client.get(VOICES, headers=auth(key) if key else {})
    assert response.status_code == 200, response.text
    return [voice for voice in response.json()["voices"] if voice.get("custom")]


def custom_names(server: RunningServer, key: str | None) -> set[str]:
    return {voice["name"] for voice in listing(server, key)}


def stored_files(store: Path) -> list[str]:
    return sorted(str(path.relative_to(store)) for path in store.rglob("*") if path.is_file())


def predict(server: RunningServer, key: str, **instance: Any) -> Any:
    with server.client() as client:
        return client.post(PREDICT, headers=auth(key), json={"instances": [{"prompt": "Hello there.", **instance}]})


def audio_of(response: Any) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["predictions"][0]["audio"])


@pytest.fixture(scope="module")
def mine(keyed_server: RunningServer) -> str:
    """Key A's voice `mine`, uploaded as multipart."""
    response = upload(keyed_server, KEY_A, "mine", language="en", description="a test voice")
    assert response.status_code == 201, response.text
    return "mine"


def test_an_upload_is_listed_for_its_key_only(keyed_server, mine):
    (entry,) = [voice for voice in listing(keyed_server, KEY_A) if voice["name"] == mine]
    assert entry["custom"] is True and entry["own"] is True and entry["published"] is False
    assert (entry["language"], entry["language_name"], entry["description"]) == ("en", "English", "a test voice")
    assert entry["consent"] == CONSENT and entry["created_at"]
    assert "owner" not in entry, "keys never learn each other's owner hashes"
    assert mine not in custom_names(keyed_server, KEY_B)
    assert mine not in custom_names(keyed_server, None)


def test_a_json_upload_works_too_and_the_voice_reads_back_as_a_canonical_npz(keyed_server):
    npz = base64.b64encode(savez(ARRAYS, True)).decode()
    body = {"name": "from-json", "consent": CONSENT, "language": "de", "npz_base64": npz}
    with keyed_server.client() as client:
        created = client.post(VOICES, headers=auth(KEY_A), json=body)
        assert created.status_code == 201, created.text
        assert (created.json()["semantic_tokens"], created.json()["frames"]) == (309, 464)
        # The upload's answer shows the voice as the listing does.
        (listed,) = [voice for voice in listing(keyed_server, KEY_A) if voice["name"] == "from-json"]
        assert {key: created.json()[key] for key in listed} == listed
        assert listed["language_name"] == "German"
        downloaded = client.get(f"{VOICES}/from-json", headers=auth(KEY_A))
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "application/octet-stream"
    with np.load(io.BytesIO(downloaded.content), allow_pickle=False) as loaded:
        for key, array in ARRAYS.items():
            np.testing.assert_array_equal(loaded[key], array)


@pytest.mark.parametrize("route", ["v1", "speech"])
def test_a_seeded_request_with_the_uploaded_voice_is_the_same_audio_as_the_preset_file(keyed_server, mine, route):
    """Audio and tokens: the tiny checkpoint's random codec makes audio a weak witness (different tokens
    can decode alike), so each take also keeps its tokens (`save_voice`), which must match too."""

    def synthesize(voice: str, keep_as: str) -> tuple[bytes, bytes]:
        keep = {"save_voice": {"name": f"{keep_as}-{route}"}}
        with keyed_server.client() as client:
            if route == "v1":
                audio = audio_of(predict(keyed_server, KEY_A, prompt=SENTENCE, voice=voice, seed=99, **keep))
            else:
                body = {"input": SENTENCE, "voice": voice, "seed": 99, "response_format": "wav", **keep}
                response = client.post(SPEECH, headers=auth(KEY_A), json=body)
                assert response.status_code == 200, response.text
                audio = response.content
            tokens = client.get(f"{VOICES}/{keep_as}-{route}", headers=auth(KEY_A))
        assert tokens.status_code == 200, tokens.text
        return audio, tokens.content

    uploaded, as_file = synthesize(mine, "via-upload"), synthesize(FILE_PRESET, "via-file")
    assert uploaded == as_file
    assert uploaded[1] != synthesize("v2/en_speaker_6", "via-other")[1], "the voice matters"


BAD_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "missing consent": ({"consent": None}, "consent"),
    "blank consent": ({"consent": "   "}, "consent"),
    "a preset's name": ({"name": "v2/en_speaker_1"}, "name"),
    "an alias's name": ({"name": "alloy"}, "name"),
    "random": ({"name": "random"}, "name"),
    "path characters": ({"name": "../../etc/passwd"}, "name"),
    "a slash": ({"name": "a/b"}, "name"),
    "too long a name": ({"name": "x" * 65}, "name"),
    "not one of Bark's languages": ({"language": "xx"}, "language"),
}


@pytest.mark.parametrize("case", [*BAD, *BAD_FIELDS])
def test_every_bad_upload_is_a_400_and_nothing_is_stored(keyed_server, voice_store, mine, case):
    before, listed = stored_files(voice_store), custom_names(keyed_server, KEY_A)
    if case in BAD:
        response = upload(keyed_server, KEY_A, "bad-one", BAD[case][0]())
        param = "file"
    else:
        fields, param = BAD_FIELDS[case]
        response = upload(keyed_server, KEY_A, fields.pop("name", "bad-one"), **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert stored_files(voice_store) == before and custom_names(keyed_server, KEY_A) == listed


def test_other_upload_refusals(keyed_server, mine):
    assert upload(keyed_server, KEY_A, mine).status_code == 409, "a name the key already has"
    with keyed_server.client() as client:
        no_file = client.post(VOICES, headers=auth(KEY_A), data={"name": "x", "consent": CONSENT}, files={"y": b"1"})
        text = client.post(VOICES, headers={**auth(KEY_A), "content-type": "text/plain"}, content=b"hello")
        not_base64 = client.post(
            VOICES, headers=auth(KEY_A), json={"name": "x", "consent": CONSENT, "npz_base64": "!!"}
        )
        no_key = client.post(VOICES, json={"name": "x", "consent": CONSENT, "npz_base64": "AA=="})
    assert (no_file.status_code, no_file.json()["error"]["param"]) == (400, "file")
    assert (text.status_code, text.json()["error"]["param"]) == (400, "content-type")
    assert (not_base64.status_code, not_base64.json()["error"]["param"]) == (400, "npz_base64")
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"


def test_another_key_neither_sees_nor_uses_nor_deletes_a_voice(keyed_server, mine):
    refused = predict(keyed_server, KEY_B, voice=mine)
    assert refused.status_code == 400 and "instances[0].voice" in refused.json()["error"]
    with keyed_server.client() as client:
        turns = [{"text": "Hi.", "voice": "v2/en_speaker_1"}, {"text": "Hello.", "voice": mine}]
        dialogue = client.post(PREDICT, headers=auth(KEY_B), json={"instances": [{"turns": turns}]})
        speech = client.post(SPEECH, headers=auth(KEY_B), json={"input": "Hi.", "voice": mine})
        assert client.get(f"{VOICES}/{mine}", headers=auth(KEY_B)).status_code == 404
        assert client.delete(f"{VOICES}/{mine}", headers=auth(KEY_B)).status_code == 404
        assert client.get(f"{VOICES}/{mine}").status_code == 401, "one voice's tokens need a key"
    assert dialogue.status_code == 400 and "instances[0].turns[1].voice" in dialogue.json()["error"]
    assert speech.status_code == 400 and speech.json()["error"]["param"] == "voice"
    # B may have a voice of the same name: names are per key.
    assert upload(keyed_server, KEY_B, mine).status_code == 201
    assert audio_of(predict(keyed_server, KEY_A, voice=mine, seed=1))
    assert mine in custom_names(keyed_server, KEY_A) and mine in custom_names(keyed_server, KEY_B)


def test_custom_voices_work_in_dialogue_turns_and_with_continuity(keyed_server, mine):
    turns = [{"text": "Hello there.", "voice": mine}, {"text": "Hi. Nice to meet you.", "voice": "random"}]
    body = {"turns": turns, "seed": 5, "continuity": "previous", "batch_chunk_size": 3, "timestamps": True}
    first, second = (audio_of(predict(keyed_server, KEY_A, **body, prompt=None)) for _ in range(2))
    assert first == second, "seeded runs repeat"


def test_an_admin_key_publishes_a_voice_to_every_key(keyed_server):
    assert upload(keyed_server, ADMIN, "house-voice").status_code == 201
    with keyed_server.client() as client:
        refused = client.patch(f"{VOICES}/house-voice", headers=auth(KEY_A), json={"published": True})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert predict(keyed_server, KEY_B, voice="house-voice").status_code == 400
        published = client.patch(f"{VOICES}/house-voice", headers=auth(ADMIN), json={"published": True})
        assert published.status_code == 200 and published.json()["published"] is True
        assert audio_of(predict(keyed_server, KEY_B, voice="house-voice", seed=2))
        assert "house-voice" in custom_names(keyed_server, KEY_B) and "house-voice" in custom_names(keyed_server, None)
        assert client.get(f"{VOICES}/house-voice", headers=auth(KEY_B)).status_code == 200
        assert client.delete(f"{VOICES}/house-voice", headers=auth(KEY_B)).status_code == 404, "not B's to delete"
        admin_view = listing(keyed_server, ADMIN)
        assert all("owner" in voice for voice in admin_view) and {"mine", "house-voice"} <= {
            v["name"] for v in admin_view
        }
        client.patch(f"{VOICES}/house-voice", headers=auth(ADMIN), json={"published": False})
    assert predict(keyed_server, KEY_B, voice="house-voice").status_code == 400


def test_random_takes_repeat_with_a_seed_and_save_voice_keeps_one(keyed_server, voice_store):
    take = {"voice": "random", "seed": 31337, "prompt": "A voice nobody has heard before."}
    first = predict(keyed_server, KEY_A, **take, save_voice={"name": "heard-1"})
    second = predict(keyed_server, KEY_A, **take, save_voice={"name": "heard-2", "description": "again"})
    assert audio_of(first) == audio_of(second) and first.json()["predictions"][0]["saved_voice"] == "heard-1"
    with keyed_server.client() as client:
        speech = client.post(
            SPEECH,
            headers=auth(KEY_A),
            json={"input": take["prompt"], "voice": "random", "seed": 31337, "save_voice": {"name": "heard-3"}},
        )
        assert speech.status_code == 200 and speech.headers["x-saved-voice"] == "heard-3"
        files = [client.get(f"{VOICES}/heard-{n}", headers=auth(KEY_A)).content for n in (1, 2, 3)]
        assert files[0] == files[1] == files[2], "the same take, the same .npz"
        again = client.post(
            VOICES,
            headers=auth(KEY_A),
            json={"name": "heard-again", "consent": CONSENT, "npz_base64": base64.b64encode(files[0]).decode()},
        )
        assert again.status_code == 201, "a kept voice uploads again"
    entry = next(voice for voice in listing(keyed_server, KEY_A) if voice["name"] == "heard-2")
    assert entry["description"] == "again" and "random" in entry["consent"]
    taken = predict(keyed_server, KEY_A, **take, save_voice={"name": "heard-1"})
    assert taken.status_code == 409, "refused before any audio is made"
    assert predict(keyed_server, KEY_A, **take, save_voice={"name": "alloy"}).status_code == 400


def test_a_deleted_voice_is_gone_at_once(keyed_server):
    assert upload(keyed_server, KEY_A, "short-lived").status_code == 201
    with keyed_server.client() as client:
        assert client.delete(f"{VOICES}/short-lived", headers=auth(KEY_A)).status_code == 204
        assert client.get(f"{VOICES}/short-lived", headers=auth(KEY_A)).status_code == 404
    assert predict(keyed_server, KEY_A, voice="short-lived").status_code == 400
    assert "short-lived" not in custom_names(keyed_server, KEY_A)


def test_a_key_keeps_at_most_max_voices_per_key(keyed_server):
    have = len([voice for voice in listing(keyed_server, KEY_B) if voice["own"]])
    for number in range(have, 20):
        assert upload(keyed_server, KEY_B, f"many-{number}").status_code == 201
    refused = upload(keyed_server, KEY_B, "one-too-many")
    assert refused.status_code == 403 and "max_voices_per_key" in refused.json()["error"]["message"]


@pytest.fixture(scope="module", autouse=True)
def _no_server_error_answered(keyed_server: RunningServer) -> Iterator[None]:
    yield
    answered = re.findall(r'HTTP/1.1" (5\d\d)', keyed_server.log())
    assert not answered, keyed_server.log()[-3000:]
