"""Shared fixtures: the tiny checkpoint (built once), one running server for HTTP tests, one throwaway
PostgreSQL (the job store's and the voice store's tests), the tiny engine on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model_server.config import Settings
from model_server.generation.engine import BarkEngine
from model_server.tiny import build_checkpoint
from tests.serving import RunningServer, running_server
from tests.sidecar.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Bark checkpoint of the real architecture, built locally (no hub)."""
    return build_checkpoint(tmp_path_factory.mktemp("bark-tiny"))


@pytest.fixture(scope="session")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real `python -m model_server` on a free port, serving the tiny checkpoint."""
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (a fresh database per test: `new_database()`)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> BarkEngine:
    """The tiny checkpoint on the CPU with the static-cache decoder, no warm-up."""
    return BarkEngine(Settings(model_dir=tiny_checkpoint, device="cpu", decoder="static", warmup=False))
