"""Surviving an out-of-memory batch: split it in halves and retry before failing anyone.

The scheduler fills batches up to `max_batch_size` chunks, but GPU memory depends on the chunks'
lengths, the voice prompt and whatever else the device holds, so a batch that fit yesterday can
run out of memory today. Failing every request in it would turn one oversized batch into many
500s; running it again as two halves (recursively, down to single chunks) costs only time.
A chunk that runs out of memory alone re-raises: that is a real failure, reported per request.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

Payload = TypeVar("Payload")
Result = TypeVar("Result")

#: What "out of memory" looks like: CUDA's allocator error and the host's own.
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, MemoryError)


#: Messages of CUDA errors that poison the context: every later kernel of the process fails too.
_STICKY_CUDA_ERRORS = (
    "device-side assert",
    "illegal memory access",
    "illegal address",
    "illegal instruction",
    "misaligned address",
    "unspecified launch failure",
    "hardware stack error",
    "uncorrectable ecc error",
)


def is_fatal_device_error(error: BaseException) -> bool:
    """A CUDA error the process cannot recover from (CUDA's "sticky" errors): the only cure is a new
    process, so the server must turn not ready and exit rather than fail every batch forever."""
    text = str(error).lower()
    return ("cuda" in text or isinstance(error, getattr(torch, "AcceleratorError", ()))) and any(
        marker in text for marker in _STICKY_CUDA_ERRORS
    )


def release_cached_memory(device: torch.device) -> None:
    """Give the failed attempt's memory back before the retry (its tensors die with its traceback)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_splitting_on_oom(
    run: Callable[[list[Payload]], list[Result]],
    payloads: list[Payload],
    release: Callable[[], None] = lambda: None,
) -> list[Result]:
    """`run(payloads)`; on out-of-memory, run each half the same way and join the results in order."""
    try:
        return run(payloads)
    except OUT_OF_MEMORY as error:
        if len(payloads) <= 1:
            raise
        logger.warning(
            "out of memory on a batch of %d chunks (%s); retrying as batches of %d and %d",
            len(payloads),
            type(error).__name__,
            len(payloads) // 2,
            len(payloads) - len(payloads) // 2,
        )
    # Outside the `except` block, so the failed attempt's frames (and their tensors) are gone.
    release()
    half = len(payloads) // 2
    return run_splitting_on_oom(run, payloads[:half], release) + run_splitting_on_oom(run, payloads[half:], release)
