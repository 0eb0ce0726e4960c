"""Start the real model server (`python -m model_server`) in a subprocess for HTTP tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Keeps generation short on the tiny checkpoint: 6 semantic tokens per word, at least 12.
FAST_GENERATION_ENV = {"BARK_SEMANTIC_TOKENS_PER_WORD": "6", "BARK_SEMANTIC_TOKENS_MIN": "12"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@contextlib.contextmanager
def running_server(
    model_dir: Path, log_dir: Path, env: dict[str, str] | None = None, ready_timeout_s: float = 180.0
) -> Iterator[RunningServer]:
    """Serve `model_dir` on a free loopback port until the block ends; fail with the log if it dies."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    # Custom voices go to the test's own folder, never the clone's default `.cache/bark-voices`.
    voices = {"BARK_VOICE_STORE": str(log_dir / f"voices-{port}")}
    environment = {**os.environ, **FAST_GENERATION_ENV, **voices, **(env or {})}
    command = [sys.executable, "-m", "model_server", "--model_dir", str(model_dir), "--http_port", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log_file, stderr=log_file)
    server = RunningServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        wait_until_ready(server, ready_timeout_s, environment.get("BARK_MODEL_NAME", "bark"))
        yield server
    finally:
        stop_process(process, grace_s=30)


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`: no test leaves a process behind."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_ready(server: RunningServer, timeout_s: float, model_name: str = "bark") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            response = httpx.get(f"{server.url}/v1/models/{model_name}", timeout=2)
            if response.status_code == 200 and response.json().get("ready"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server not ready after {timeout_s} s:\n{server.log()[-4000:]}")
