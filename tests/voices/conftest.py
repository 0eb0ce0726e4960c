"""The voice store tests: a fresh database on the session's PostgreSQL (tests/conftest.py) and a poll."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.sidecar.postgres import PostgresServer


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
