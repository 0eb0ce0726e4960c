"""Test doubles for the sidecar: a fake model server, a recording webhook receiver, sidecar runners.

Everything listens on loopback ports; nothing sleeps to "let things happen": tests poll state with
`wait_for` and a deadline, and hold requests open with gates (threading.Event) to freeze a moment.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from tests.serving import REPO_ROOT, free_port
from webhook_sidecar.api import create_app
from webhook_sidecar.config import Settings

SECRET = "whsec_" + base64.b64encode(b"sidecar-test-secret-32-bytes-key").decode()
SAMPLE_RATE = 24_000


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; return its value, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def job_body(receiver: Receiver, prompt: str = "Hello there.", **model_input: Any) -> dict[str, Any]:
    """The `/async_predict` body of the original API, pointed at `receiver`."""
    return {"model_input": {"prompt": prompt, **model_input}, "webhook_endpoint": receiver.url}


# -- audio -----------------------------------------------------------------------------------------


def submit(url: str, body: dict[str, object]) -> str:
    """POST a job to a running sidecar; its id (the 202 is asserted)."""
    response = httpx.post(f"{url}/async_predict", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def samples_for(prompt: str) -> np.ndarray:
    """Audio that identifies its prompt: 16 PCM16 samples from the prompt's SHA-256."""
    return np.frombuffer(hashlib.sha256(prompt.encode()).digest(), dtype=np.int16)


def wav_for(prompt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples_for(prompt), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def prediction_for(prompt: str) -> dict[str, Any]:
    samples = samples_for(prompt)
    return {
        "audio": base64.b64encode(wav_for(prompt)).decode(),
        "format": "wav",
        "sample_rate": SAMPLE_RATE,
        "duration_s": len(samples) / SAMPLE_RATE,
        "chunks": 1,
    }


def decode_wav(audio: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(audio), dtype="int16")
    return samples, rate


# -- threaded uvicorn ------------------------------------------------------------------------------


class ThreadedUvicorn:
    """An ASGI app on a loopback port, served from a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 20, "uvicorn to start")
        if not self.server.started:
            raise RuntimeError("uvicorn did not start (see the log above)")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


# -- fake model server -----------------------------------------------------------------------------


@dataclass
class FakeModel:
    """The model server's v1 predict route. `script` answers first (status, body, headers), then audio.

    Close `gate` to hold requests open (the job stays `running`); `in_flight` counts held requests.
    `overlaps` lists prompts that arrived while a call with the same prompt was still in flight (a
    job run by two sidecars at once). `request_ids` records each call's `x-request-id`.

    `GET /v1/requests/{id}/progress` answers `progress` (status, body: a dict is JSON, a str is sent
    as is) for any id; None: 404, as for a request the model server does not know. `progress_reads`
    records each read as (request id, its headers). `disconnects` lists the `x-request-id` of each
    held call whose client hung up (an aborted predict: the sidecar cancelled the job).
    """

    gate: threading.Event = field(default_factory=threading.Event)
    script: deque[tuple[int, Any, dict[str, str]]] = field(default_factory=deque)
    prompts: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    in_flight: int = 0
    url: str = ""
    running: Counter[str] = field(default_factory=Counter)
    #: Seconds every call takes (0: answer at once), so concurrent runs of one job would overlap.
    delay_s: float = 0.0
    request_ids: list[str | None] = field(default_factory=list)
    progress: tuple[int, dict[str, Any] | str] | None = None
    progress_reads: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    disconnects: list[str | None] = field(default_factory=list)
    #: What `GET /v1/models/bark` (KServe's readiness) answers: 200 ready, 503 not.
    ready_status: int = 200
    #: A prediction to answer instead of `prediction_for(prompt)` (a long stub audio, extra fields).
    answer: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.gate.set()
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the last test: open gate, empty script and log (held requests are let go)."""
        self.gate.set()
        wait_for(lambda: self.in_flight == 0, 10, "held model requests to finish")
        with self._lock:
            self.script.clear()
            self.prompts.clear()
            self.overlaps.clear()
            self.running.clear()
            self.delay_s = 0.0
            self.request_ids.clear()
            self.progress = None
            self.progress_reads.clear()
            self.disconnects.clear()
            self.ready_status = 200
            self.answer = None

    @property
    def predict_url(self) -> str:
        return f"{self.url}/v1/models/bark:predict"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/models/bark:predict")
        async def predict(request: Request) -> JSONResponse:
            body = await request.json()
            prompt = body["instances"][0]["prompt"]
            with self._lock:
                self.prompts.append(prompt)
                self.request_ids.append(request.headers.get("x-request-id"))
                self.in_flight += 1
                if self.running[prompt]:
                    self.overlaps.append(prompt)
                self.running[prompt] += 1
            try:
                if await self._held_until_open(request):
                    with self._lock:
                        self.disconnects.append(request.headers.get("x-request-id"))
                    return JSONResponse({"error": "client disconnected"}, status_code=499)
                if request_delay_s := self.delay_s:
                    await asyncio.sleep(request_delay_s)
                with self._lock:
                    scripted = self.script.popleft() if self.script else None
            finally:
                with self._lock:
                    self.in_flight -= 1
                    self.running[prompt] -= 1
            if scripted is not None:
                status, content, headers = scripted
                return JSONResponse(content, status_code=status, headers=headers)
            return JSONResponse({"predictions": [self.answer or prediction_for(prompt)]})

        @app.get("/v1/models/bark")
        async def ready() -> JSONResponse:
            ready = self.ready_status == 200
            return JSONResponse({"name": "bark", "ready": ready}, status_code=self.ready_status)

        @app.get("/v1/requests/{request_id}/progress")
        async def progress(request_id: str, request: Request) -> Response:
            with self._lock:
                self.progress_reads.append((request_id, dict(request.headers)))
                answer = self.progress
            if answer is None:
                return JSONResponse({"error": f"no request {request_id}"}, status_code=404)
            status, content = answer
            if isinstance(content, str):
                return PlainTextResponse(content, status_code=status)
            return JSONResponse({"request_id": request_id, **content}, status_code=status)

        return app

    async def _held_until_open(self, request: Request) -> bool:
        """Wait for the gate (60 s at most); True if the client hung up meanwhile."""
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(self.gate.wait, 0.02):
            if await request.is_disconnected():
                return True
            if time.monotonic() > deadline:
                break
        return False


# -- webhook receiver ------------------------------------------------------------------------------


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int
    #: The sender's (address, port): one TCP connection each.
    peer: tuple[str, int] = ("", 0)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """A webhook endpoint recording every request (before answering) on a fixed loopback port.

    `script` holds answers for the next requests: a status code, or "hang" (answer after `hang_s`).
    Close `gate` to hold requests open; `held` counts them. `down()`/`up()` stop and restart it.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1", keep_alive: bool = False) -> None:
        self.keep_alive = keep_alive
        self.port = free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}/hook"
        self.deliveries: list[Delivery] = []
        self.script: deque[int | str] = deque()
        self.gate = threading.Event()
        self.gate.set()
        self.hang_s = 3.0
        self.held = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    answer = receiver.script.popleft() if receiver.script else 200
                    status = 599 if answer == "hang" else int(answer)
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.deliveries.append(Delivery(headers, body, status, tuple(self.client_address)))
                    receiver.held += 1
                try:
                    receiver.gate.wait(60)
                    if answer == "hang":
                        time.sleep(receiver.hang_s)
                        return
                finally:
                    with receiver._lock:
                        receiver.held -= 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the sidecar hung up (timeout or SIGKILL): expected here

        self._server = Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def acknowledged(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if 200 <= d.status < 300]

    def count(self) -> int:
        with self._lock:
            return len(self.deliveries)


# -- sidecars --------------------------------------------------------------------------------------


def fast_settings(**overrides: Any) -> Settings:
    """Fast settings for tests (give `db_path` and `model_url`): tiny back-offs, loopback allowlisted."""
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "webhook_allowlist": "127.0.0.1",
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "poll_interval_s": 0.05,
        "delivery_timeout_s": 2.0,
        "job_timeout_s": 20.0,
        **overrides,
    }
    return Settings(**values)


@dataclass
class InProcessSidecar:
    """The sidecar app served from a thread of the test process (fast to start, easy to inspect)."""

    settings: Settings
    runner: ThreadedUvicorn

    @property
    def url(self) -> str:
        return self.runner.url

    @property
    def app(self) -> FastAPI:
        return self.runner.server.config.app  # type: ignore[no-any-return]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def job(self, job_id: str, **headers: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_state(self, job_id: str, *states: str, timeout_s: float = 15.0, **headers: str) -> dict[str, Any]:
        return wait_for(
            lambda: (job := self.job(job_id, **headers))["state"] in states and job,
            timeout_s,
            f"job {job_id} to reach {states}",
        )


@contextmanager
def in_process_sidecar(settings: Settings) -> Iterator[InProcessSidecar]:
    runner = ThreadedUvicorn(create_app(settings))
    runner.start()
    try:
        yield InProcessSidecar(settings, runner)
    finally:
        runner.stop()


class SidecarProcess:
    """`python -m webhook_sidecar` as a child process, for SIGKILL and SIGTERM tests."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> SidecarProcess:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("SIDECAR_")}
        environment = {**inherited, **self.env, "SIDECAR_HOST": "127.0.0.1", "SIDECAR_PORT": str(port)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webhook_sidecar"],
                cwd=REPO_ROOT,
                env=environment,
                stdout=log,
                stderr=log,
            )
        wait_for(self._ready, 30, "the sidecar process to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"sidecar exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def process_env(model_url: str, **env: str) -> dict[str, str]:
    """The environment of a test sidecar process: the test secret, loopback allowed, fast retries and polls."""
    return {
        "SIDECAR_MODEL_URL": model_url,
        "SIDECAR_WEBHOOK_SECRET": SECRET,
        "SIDECAR_WEBHOOK_ALLOWLIST": "127.0.0.1",
        "SIDECAR_RETRY_BASE_S": "0.05",
        "SIDECAR_RETRY_MAX_S": "0.2",
        "SIDECAR_POLL_INTERVAL_S": "0.05",
        "SIDECAR_MAX_ATTEMPTS": "50",
        **env,
    }


@contextmanager
def sidecar_processes(folder: Path, base_env: dict[str, str]) -> Iterator[Callable[..., SidecarProcess]]:
    """`start(name="sidecar", **env)` starts a sidecar process on `base_env` + `env`, logging to
    `<folder>/<name>.log`; all are stopped when the block ends."""
    started: list[SidecarProcess] = []

    def start(name: str = "sidecar", **env: str) -> SidecarProcess:
        process = SidecarProcess({**base_env, **env}, folder / f"{name}.log")
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()
