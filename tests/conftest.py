"""Shared fixtures: the tiny checkpoint (built once) and one running server for HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model_server.tiny import build_checkpoint
from tests.serving import RunningServer, running_server


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Bark checkpoint of the real architecture, built locally (no hub)."""
    return build_checkpoint(tmp_path_factory.mktemp("bark-tiny"))


@pytest.fixture(scope="session")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real `python -m model_server` on a free port, serving the tiny checkpoint."""
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("logs")) as running:
        yield running
