"""A real PostgreSQL for the voice store tests (the sidecar tests' throwaway server), and a way to stop
and start it as an operator's outage would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_server.config import Settings
from model_server.generation.engine import BarkEngine
from tests.sidecar.postgres import PostgresServer, _unprivileged_user, postgres_bin_dir, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def voices_db(postgres: PostgresServer) -> str:
    """A fresh database per test."""
    return postgres.new_database()


def pg_ctl(server: PostgresServer, action: str) -> None:
    """`pg_ctl stop -m immediate` (a crash, as far as clients know) or `start` on the test server."""
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    user = _unprivileged_user()
    prefix = ["runuser", "-u", user, "--"] if user else []
    data = server.folder / "data"
    if action == "stop":
        command = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    else:
        options = (
            f"-p {server.port} -k {server.folder} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(server.folder / "server.log")
        command = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "-t", "60", "start"]
    result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> BarkEngine:
    """The tiny checkpoint's engine (its presets and prompt limits), on the CPU, no warm-up."""
    return BarkEngine(Settings(model_dir=tiny_checkpoint, device="cpu", decoder="static", warmup=False))
