"""Two real model servers (`python -m model_server`) on one real PostgreSQL voice store.

A voice uploaded on A is usable on B within a second; deleted on A, B refuses it (400) within a
second; another key sees it on neither server. The changes travel by LISTEN/NOTIFY: each server's
version poll is set to 10 s here, so only a notification can make a second.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import RunningServer, running_server
from tests.sidecar.postgres import PostgresServer
from tests.voice_files import bark_arrays, savez
from tests.voices.conftest import seconds_until

KEY_A, KEY_B = "first-key-0123456789", "second-key-0123456789"
VOICES = "/v1/audio/voices"
PREDICT = "/v1/models/bark:predict"


@pytest.fixture(scope="module")
def two_servers(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[tuple[RunningServer, RunningServer]]:
    env = {
        "BARK_VOICE_STORE": postgres.new_database(),
        "BARK_API_KEYS": f"{KEY_A},{KEY_B}",
        "BARK_VOICE_STORE_POLL_S": "10",
    }
    logs = tmp_path_factory.mktemp("two-servers")
    with (
        running_server(tiny_checkpoint, logs, env=env) as first,
        running_server(tiny_checkpoint, logs, env=env) as second,
    ):
        yield first, second


def headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def names(server: RunningServer, key: str) -> set[str]:
    response = httpx.get(server.url + VOICES, headers=headers(key), timeout=10)
    assert response.status_code == 200, response.text
    return {voice["name"] for voice in response.json()["voices"] if voice.get("custom")}


def speak(server: RunningServer, key: str, voice: str) -> httpx.Response:
    body = {"instances": [{"prompt": "Shared voices.", "voice": voice, "seed": 7}]}
    return httpx.post(server.url + PREDICT, headers=headers(key), json=body, timeout=120)


def test_a_voice_travels_between_servers_within_a_second(two_servers):
    first, second = two_servers
    npz = base64.b64encode(savez(bark_arrays(seed=5))).decode()
    body = {"name": "travelling", "consent": "The speaker agreed.", "npz_base64": npz}
    assert "travelling" not in names(second, KEY_A)
    created = httpx.post(first.url + VOICES, headers=headers(KEY_A), json=body, timeout=30)
    assert created.status_code == 201, created.text
    assert seconds_until(lambda: "travelling" in names(second, KEY_A)) < 1.0
    assert speak(second, KEY_A, "travelling").status_code == 200
    # Another key sees it on neither server, and cannot use it.
    assert "travelling" not in names(first, KEY_B) and "travelling" not in names(second, KEY_B)
    refused = speak(second, KEY_B, "travelling")
    assert refused.status_code == 400 and "unknown voice 'travelling'" in refused.json()["error"]

    deleted = httpx.delete(f"{first.url}{VOICES}/travelling", headers=headers(KEY_A), timeout=30)
    assert deleted.status_code == 204
    assert seconds_until(lambda: speak(second, KEY_A, "travelling").status_code == 400) < 1.0
    assert "travelling" not in names(second, KEY_A)


def test_both_servers_derive_the_same_owner_from_a_key(two_servers):
    """An upload on B belongs to the same key on A: the owner hash's secret is the store's, not a server's."""
    first, second = two_servers
    body = {"name": "made-on-b", "consent": "Agreed.", "npz_base64": base64.b64encode(savez(bark_arrays())).decode()}
    assert httpx.post(second.url + VOICES, headers=headers(KEY_B), json=body, timeout=30).status_code == 201
    seconds_until(lambda: "made-on-b" in names(first, KEY_B))
    downloaded = httpx.get(f"{first.url}{VOICES}/made-on-b", headers=headers(KEY_B), timeout=30)
    assert downloaded.status_code == 200
    assert httpx.get(f"{first.url}{VOICES}/made-on-b", headers=headers(KEY_A), timeout=30).status_code == 404
