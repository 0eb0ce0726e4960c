"""Fixtures shared by the generation tests that run the tiny checkpoint's weights on a CPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_cpu_thread() -> Iterator[None]:
    """Tiny-model ops take microseconds: with 2 OpenMP threads on a busy 2-core runner the decoding
    tests took 69 s, with 1 thread 10 s. One thread also makes CPU results bitwise repeatable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
