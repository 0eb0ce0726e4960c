"""Fixtures for the sidecar tests: a fake model, a webhook receiver, and a sidecar factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.sidecar.harness import (
    FakeModel,
    InProcessSidecar,
    Receiver,
    ThreadedUvicorn,
    fast_settings,
    in_process_sidecar,
)
from tests.sidecar.postgres import PostgresServer


@pytest.fixture(scope="session")
def _fake_model_server() -> Iterator[FakeModel]:
    model = FakeModel()
    runner = ThreadedUvicorn(model.app())
    model.url = runner.url
    runner.start()
    yield model
    model.gate.set()
    runner.stop()


@pytest.fixture
def fake_model(_fake_model_server: FakeModel) -> Iterator[FakeModel]:
    """The fake model server, shared by all tests (starting one takes time), reset for each."""
    _fake_model_server.reset()
    yield _fake_model_server
    _fake_model_server.gate.set()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.up()
    yield receiver
    receiver.gate.set()
    receiver.down()


@pytest.fixture
def make_sidecar(tmp_path: Path, fake_model: FakeModel) -> Iterator[Callable[..., InProcessSidecar]]:
    """`make_sidecar(**settings)` starts an in-process sidecar on this test's store and fake model."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> InProcessSidecar:
            overrides.setdefault("db_path", tmp_path / "jobs.sqlite3")
            overrides.setdefault("model_url", fake_model.predict_url)
            settings = fast_settings(**overrides)
            return stack.enter_context(in_process_sidecar(settings))

        yield make


@pytest.fixture
def sidecar(make_sidecar: Callable[..., InProcessSidecar]) -> InProcessSidecar:
    return make_sidecar()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """`SIDECAR_DATABASE_URL` of a new, empty database on the session's server."""
    return postgres.new_database()
