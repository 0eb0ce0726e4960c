"""A real PostgreSQL for the voice store tests (the sidecar tests' throwaway server), and a poll."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model_server.config import Settings
from model_server.generation.engine import BarkEngine
from tests.sidecar.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def voices_db(postgres: PostgresServer) -> str:
    """A fresh database per test."""
    return postgres.new_database()


def seconds_until(check: Callable[[], bool], within_s: float = 10.0) -> float:
    """Seconds until `check()` held; fails after `within_s`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, f"not within {within_s} s"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> BarkEngine:
    """The tiny checkpoint's engine (its presets and prompt limits), on the CPU, no warm-up."""
    return BarkEngine(Settings(model_dir=tiny_checkpoint, device="cpu", decoder="static", warmup=False))
