"""CUDA graphs for both decoders: capture once per shape, replay after; a shape that cannot be
captured runs eagerly, alone.

A decoding step of Bark is launch-bound (the team's H200 probe, bark-small: 5.3 ms eager, 0.53 ms
replayed), so each static shape (stage x rows bucket x key range) is captured once and replayed.
What must never happen is that one shape that fails to capture (an op that cannot be captured, a
driver or allocator error) stops the start or turns graphs off everywhere: that shape runs eagerly
from then on, with a warning and `bark_decoder_fallbacks_total{reason="capture_failed"}`, and every
other shape keeps its graph. Out of memory is not a capture problem: it is raised as itself, so the
caller's out-of-memory handling (halving the batch or the active rows) applies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch

from model_server import metrics
from model_server.generation.faults import OUT_OF_MEMORY

logger = logging.getLogger(__name__)


def capture_graph(step: Callable[[], Any], device: torch.device, pool: Any) -> tuple[Any, Any]:
    """Capture `step` into `pool` after two warm-up runs on a side stream (lazy initialisation must
    not be captured); returns the graph and its static output."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        output = step()
    return graph, output


@dataclass(frozen=True)
class CapturedStep:
    graph: Any  # torch.cuda.CUDAGraph, or a stand-in with `replay()` in tests
    output: Any  # the graph's static output, overwritten by every replay


def out_of_memory_in(error: BaseException) -> BaseException | None:
    """The out-of-memory error behind `error`, if any: a capture that fails inside `torch.cuda.graph`
    surfaces as the error of ending the capture, with the original one as its context."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OUT_OF_MEMORY):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class GraphCache:
    """Captured graphs by shape key, in one memory pool; the shapes that run eagerly instead.

    Sharing one pool is safe because one thread replays them in order and each replay's output is
    consumed before the next graph that could reuse its memory replays.
    """

    def __init__(self, device: torch.device, describe: Callable[[Hashable], str] = str):
        self.device = device
        self.graphs: dict[Hashable, CapturedStep] = {}
        self.eager_shapes: set[Hashable] = set()
        self._describe = describe
        self._pool: Any = None

    def __len__(self) -> int:
        return len(self.graphs)

    def capture(self, step: Callable[[], Any]) -> CapturedStep:
        """Capture one step (tests replace this to stand in for CUDA on a CPU)."""
        started = time.perf_counter()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph, output = capture_graph(step, self.device, self._pool)
        logger.debug("captured a step graph in %.1f ms", (time.perf_counter() - started) * 1e3)
        return CapturedStep(graph, output)

    def get(
        self, key: Hashable, step: Callable[[], Any], preserve: Callable[[], Callable[[], None]] | None = None
    ) -> CapturedStep | None:
        """The graph of `key`, captured now if needed; None if this shape runs eagerly.

        Capturing runs `step` for real (the warm-up runs): a step that advances state in place passes
        `preserve`, which snapshots that state and returns what restores it after the capture.
        """
        captured = self.graphs.get(key)
        if captured is not None:
            return captured
        if key in self.eager_shapes:
            return None
        restore = preserve() if preserve is not None else None
        try:
            captured = self.capture(step)
        except Exception as error:
            if restore is not None:
                restore()
            out_of_memory = out_of_memory_in(error)
            if out_of_memory is None:
                self.capture_failed(key, error)
                return None
        else:
            if restore is not None:
                restore()
            self.graphs[key] = captured
            return captured
        # Raised outside the `except`, so Python does not chain it to (and cut it from) the wrapper.
        raise out_of_memory

    def capture_failed(self, key: Hashable, error: BaseException) -> None:
        """Run this shape eagerly from now on; say so in the log and in the metrics."""
        self.eager_shapes.add(key)
        metrics.DECODER_FALLBACKS.labels(reason="capture_failed").inc()
        logger.warning(
            "CUDA graph capture failed for %s; that shape runs eagerly from now on, the others keep their graphs: %r",
            self._describe(key),
            error,
        )

    def run(
        self,
        key: Hashable,
        step: Callable[[], Any],
        use_graphs: bool,
        preserve: Callable[[], Callable[[], None]] | None = None,
    ) -> Any:
        """`step()`'s output: replayed from its graph where one exists or can be captured, else eager."""
        if use_graphs:
            captured = self.get(key, step, preserve)
            if captured is not None:
                captured.graph.replay()
                return captured.output
        return step()
