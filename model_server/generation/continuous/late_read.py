"""The host reads each iteration's tokens and statuses once, one iteration late.

Reading a device tensor on the host (`.tolist()`, `.item()`) waits for everything queued before it,
so a loop that reads every step's tokens before launching the next keeps the GPU idle while the
host does its bookkeeping, and the host idle while the GPU steps. Instead (as vLLM's
`async_utils.AsyncOutput`): after launching iteration N the loop enqueues a copy of its outputs
into pinned host memory (`non_blocking`) and records an event; then it reads iteration N-1's copy,
waiting on N-1's event, which finished while N was being launched. The host never waits for the
step it just launched, and a finished row rides one more step, masked (its status is IDLE there).

The pinned buffers are viewed as NumPy arrays once, at start: a read is a NumPy copy, with no
torch call on the host per iteration. On a CPU there are no events and the copy is immediate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Launched:
    """What one iteration launched: per stage the rows (in slot order) whose outputs it will write."""

    rows: dict[str, list[Any]]
    buffer: int
    event: Any  # torch.cuda.Event, or None on a CPU


class LateReader:
    """Two pinned host copies of the step outputs, alternating; `reads` counts the reads made."""

    def __init__(self, out: torch.Tensor):
        self.device = out.device
        pinned = self.device.type == "cuda"
        self._host = [torch.empty(out.shape, dtype=out.dtype, pin_memory=pinned) for _ in range(2)]
        self._views = [buffer.numpy() for buffer in self._host]
        self._next = 0
        self._in_flight: Launched | None = None
        self.reads = 0

    def launched(self, out: torch.Tensor, rows: dict[str, list[Any]]) -> Launched | None:
        """Copy this iteration's outputs out (asynchronously on CUDA); return the previous iteration's
        launch, whose outputs `read` can now take."""
        buffer = self._next
        self._next ^= 1
        self._host[buffer].copy_(out, non_blocking=True)
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        previous, self._in_flight = self._in_flight, Launched(rows, buffer, event)
        return previous

    def drain(self) -> Launched | None:
        """The last launch, when no further iteration is launched (the rows all wait for the host)."""
        previous, self._in_flight = self._in_flight, None
        return previous

    def read(self, launch: Launched) -> np.ndarray:
        """(stages, slots, 2) token/status of `launch`, after its copy has landed."""
        if launch.event is not None:
            launch.event.synchronize()
        self.reads += 1
        return self._views[launch.buffer].copy()

    def forget(self) -> None:
        """Drop the launch in flight (its rows were evicted)."""
        self._in_flight = None
