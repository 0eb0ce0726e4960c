"""The one place that picks a scheduler, above both implementations (neither imports the other's module).

continuous (the default): rows of any voice, settings and seed step together (continuous/loop.py) on
the engine's weights; static: batches of one (voice, settings) key run whole by `run_batch`
(scheduler.py), kept for side-by-side benchmarks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from model_server.generation.continuous.bark_rows import BarkRowEngine
from model_server.generation.continuous.loop import ContinuousScheduler
from model_server.generation.faults import release_cached_memory
from model_server.generation.scheduler import BatchRunner, ChunkScheduler, Scheduler

logger = logging.getLogger(__name__)

#: Called once when the device fails for good (faults.is_fatal_device_error).
FatalHandler = Callable[[BaseException], None]


def build_scheduler(
    settings: Any, run_batch: BatchRunner, engine: Any, on_fatal: FatalHandler | None = None
) -> ChunkScheduler:
    """`settings.scheduler` picks the implementation; the continuous one is warmed up here."""
    options = {
        "max_batch_size": settings.max_batch_size,
        "max_wait_ms": settings.max_wait_ms,
        "max_queue_chunks": settings.max_queue_chunks,
        "retry_after_s": settings.retry_after_s,
    }
    if settings.scheduler == "static":
        return Scheduler(run_batch, **options)
    rows = BarkRowEngine(engine, settings.max_batch_size)
    if settings.warmup:
        logger.info("captured %d row-step CUDA graphs", rows.capture_graphs())
        rows.warm_up()
    # On CUDA a step of many rows costs about what one row's does (the probes: bark-small, 5.7 s per
    # 5.12 s chunk alone, 5.8 s for 8 together), and one chunk alone is made slower than it plays: a
    # stream whose second chunk started only after its first would stall. There its chunks run
    # together; on a CPU, where a step's cost grows with its rows, the first chunk runs alone first.
    return ContinuousScheduler(
        rows,
        release_memory=lambda: release_cached_memory(engine.device),
        stream_rest_waits=engine.device.type != "cuda",
        on_fatal=on_fatal,
        **options,
    )
