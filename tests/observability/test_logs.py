"""Request logs: one structured JSON line per request, without the prompt unless asked for.

Prompts can be personal data, so the default must keep them out of every log line, ours and
KServe's; `BARK_LOG_PROMPTS=true` is the explicit opt-in for debugging.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.observability.conftest import PREDICT
from tests.serving import RunningServer, running_server

#: Words no other code path prints, so finding them anywhere in the log means the prompt leaked.
PROMPT = "Quizzical marmots juggle saffron. Seventeen zeppelins hum."


def request_lines(server: RunningServer) -> list[dict[str, Any]]:
    """The JSON lines of the `bark.requests` logger (other loggers, e.g. uvicorn's, stay plain text)."""
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "bark.requests":
                lines.append(entry)
    return lines


def synthesize(server: RunningServer, request_id: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.post(PREDICT, json={"instances": [{"prompt": PROMPT}]}, headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    prediction: dict[str, Any] = response.json()["predictions"][0]
    return prediction


@pytest.fixture(scope="module")
def log_servers(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, RunningServer]]:
    """Two JSON-logging servers, started side by side: {log_prompts: server}."""
    environments = {
        False: {"BARK_LOG_FORMAT": "json", "BARK_WARMUP": "false"},  # the default: no prompts
        True: {"BARK_LOG_FORMAT": "json", "BARK_WARMUP": "false", "BARK_LOG_PROMPTS": "true"},
    }
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
        started = {
            log_prompts: pool.submit(
                stack.enter_context, running_server(tiny_checkpoint, tmp_path_factory.mktemp("logs"), env=env)
            )
            for log_prompts, env in environments.items()
        }
        yield {log_prompts: future.result() for log_prompts, future in started.items()}


@pytest.mark.parametrize("log_prompts", [False, True], ids=["default", "BARK_LOG_PROMPTS"])
def test_one_json_line_per_request_and_the_prompt_only_when_asked(
    log_servers: dict[bool, RunningServer], log_prompts: bool
) -> None:
    server = log_servers[log_prompts]
    prediction = synthesize(server, request_id=f"req-observability-{log_prompts}")
    (line,) = request_lines(server)
    log = server.log()

    assert line["request_id"] == f"req-observability-{log_prompts}"
    assert line["level"] == "info" and line["ts"].endswith("Z")
    assert line["chunks"] == prediction["chunks"] >= 1
    assert line["audio_s"] == pytest.approx(prediction["duration_s"], abs=1e-3)
    assert line["wall_s"] > 0
    # Both are rounded in the log line; the response's duration has more digits.
    assert line["rtf"] == pytest.approx(line["wall_s"] / prediction["duration_s"], rel=0.02)
    if log_prompts:
        assert line["prompts"] == [PROMPT]
    else:
        assert "prompts" not in line
        for word in ("marmots", "saffron", "zeppelins"):
            assert word not in log, f"the prompt leaked into the log: {word!r}"
