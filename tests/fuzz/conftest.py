"""One server for the fuzz tests: tight limits and very short generation, so random input stays cheap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import RunningServer, running_server

PREDICT = "/v1/models/bark:predict"

#: Small enough that random valid-looking bodies generate in well under a second each.
FUZZ_ENV = {
    "BARK_SEMANTIC_TOKENS_PER_WORD": "2",
    "BARK_SEMANTIC_TOKENS_MIN": "2",
    "BARK_MAX_PROMPT_CHARS": "300",
    "BARK_MAX_INSTANCES": "4",
    "BARK_MAX_TURNS": "6",
    "BARK_MAX_WORDS_PER_REQUEST": "120",
    "BARK_MAX_OUTPUT_SECONDS": "4",
    "BARK_MAX_BODY_BYTES": "65536",
    "BARK_MAX_WAIT_MS": "5",
}


@pytest.fixture(scope="session")
def fuzz_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("fuzz"), env=FUZZ_ENV) as server:
        yield server


def assert_healthy(server: RunningServer) -> None:
    """Ready, and still generating: the fuzzing left no broken state behind."""
    assert server.process.poll() is None, server.log()[-3000:]
    with server.client(timeout=30) as client:
        assert client.get("/v1/models/bark").status_code == 200
        response = client.post(PREDICT, json={"instances": [{"prompt": "Still alive."}]})
        assert response.status_code == 200, response.text


def is_server_error(response: httpx.Response) -> bool:
    return response.status_code >= 500
