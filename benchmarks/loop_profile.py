"""What one iteration of the real continuous loop costs the host: waits, late reads and eager ops.

On a GPU the loop is fast only if the CPU can run ahead of the GPU: every place the host reads a
device tensor (or builds one from Python data, a blocking copy) makes it wait for everything queued
before, and every eager op outside the captured step is a launch of its own. On this CPU neither
shows in a profile, so both are counted directly, on the loop's thread, over steady-state iterations
of the real row engine (8 rows by default, semantic and coarse rows both active):

- `host_syncs_per_iteration` (N): calls of `Tensor.item`, `tolist`, `numpy`, `cpu`, `__bool__`,
  `__int__`, `__float__`, `__index__`, `nonzero`, and `torch.tensor`/`as_tensor` on Python data.
- `late_reads_per_iteration` (L): the read of the previous iteration's tokens and flags from pinned
  memory after its event (counted by the engine; it does not stall the GPU).
- `eager_ops_per_iteration` (M): aten ops that do real work (views and allocations left out),
  counted by torch.profiler at the top level, outside the function that is captured on a GPU.

Steady state = an iteration in which no row joins, leaves, changes stage or re-prefills a coarse
window; the others are counted apart (`event_iterations`) with their own mean host syncs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_server.config import Settings
from model_server.generation.engine import BarkEngine, Sampling
from model_server.tiny import build_checkpoint

#: The region the GPU path captures as one graph; ops inside it are not eager launches.
CAPTURED = "bark.captured_step"

#: aten ops that only make tensor metadata (no kernel runs for them).
METADATA_OPS = frozenset(
    {
        "aten::view",
        "aten::as_strided",
        "aten::empty",
        "aten::empty_strided",
        "aten::resolve_conj",
        "aten::resolve_neg",
        "aten::_unsafe_view",
        "aten::detach",
        "aten::detach_",
        "aten::lift_fresh",
        "aten::alias",
        "aten::reshape",
        "aten::t",
        "aten::transpose",
        "aten::expand",
        "aten::slice",
        "aten::select",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::permute",
        "aten::narrow",
        "aten::empty_like",
    }
)


class HostSyncCounter:
    """Counts host reads of tensors and tensors built from Python data, on one thread only."""

    _METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero")

    def __init__(self, thread: threading.Thread | None = None):
        self.thread = thread or threading.current_thread()
        self.count = 0
        self.by_name: dict[str, int] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    def _note(self, name: str) -> None:
        if threading.current_thread() is self.thread:
            self.count += 1
            self.by_name[name] = self.by_name.get(name, 0) + 1

    def _wrap(self, owner: Any, name: str, is_host_data: Callable[..., bool] | None = None) -> None:
        original = getattr(owner, name)
        counter = self

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if is_host_data is None or is_host_data(*args, **kwargs):
                counter._note(f"{getattr(owner, '__name__', owner)}.{name}")
            return original(*args, **kwargs)

        self._saved.append((owner, name, original))
        setattr(owner, name, wrapped)

    @contextlib.contextmanager
    def installed(self) -> Iterator[HostSyncCounter]:
        def from_python(data: Any = None, *args: Any, **kwargs: Any) -> bool:
            return not isinstance(data, torch.Tensor)

        for name in self._METHODS:
            self._wrap(torch.Tensor, name)
        self._wrap(torch, "tensor", from_python)
        self._wrap(torch, "as_tensor", from_python)
        self._wrap(torch, "nonzero")
        try:
            yield self
        finally:
            for owner, name, original in reversed(self._saved):
                setattr(owner, name, original)
            self._saved.clear()


def _top_level_compute_ops(events: Any) -> int:
    """aten ops with no aten op above them, outside the captured region, that are not metadata-only."""
    count = 0
    for event in events:
        if not event.name.startswith("aten::") or event.name in METADATA_OPS:
            continue
        parent, inside, nested = event.cpu_parent, False, False
        while parent is not None:
            if parent.name == CAPTURED:
                inside = True
                break
            if parent.name.startswith("aten::"):
                nested = True
            parent = parent.cpu_parent
        if not inside and not nested:
            count += 1
    return count


def _jobs(rows: int, short_budget: int, long_budget: int) -> list[SimpleNamespace]:
    """Half the rows finish their semantic tokens soon (then step in coarse), half stay semantic."""
    jobs = []
    for index in range(rows):
        budget = short_budget if index % 2 == 0 else long_budget
        sampling = (
            Sampling(seed=index, semantic_temperature=0.6 + 0.05 * index) if index % 3 else Sampling(do_sample=False)
        )
        voice = f"v2/en_speaker_{index % 10}" if index % 4 != 3 else None
        payload = SimpleNamespace(text=f"Row number {index} speaks a sentence of test words.", budget=budget)
        jobs.append(SimpleNamespace(key=(voice, sampling), payload=payload, seed=None))
    return jobs


def profile_loop(engine: BarkEngine, rows: int, iterations: int) -> dict[str, Any]:
    """Run the real row engine; count host syncs, late reads and eager ops per steady iteration."""
    profiling = _Instrumented
    row_engine = profiling.row_engine(engine, rows)
    # Short rows: coarse tokens (3 per semantic token) for both passes; long rows stay semantic.
    short = (rows + 1) // 2
    row_engine.admit(_jobs(rows, short_budget=iterations + 10, long_budget=min(700, iterations * 3 + 60)))
    for _ in range(iterations * 4):  # until every short row steps in its coarse stage: both stages active
        if profiling.stage_rows(row_engine)["coarse"] >= short:
            break
        row_engine.step()
    counter = HostSyncCounter()
    steady_syncs: list[int] = []
    event_syncs: list[int] = []
    late_reads: list[int] = []
    steady_ops: list[int] = []
    wall: list[float] = []
    with counter.installed():
        for _ in range(iterations):
            events_before, reads_before, syncs_before = (
                profiling.events(row_engine),
                profiling.late_reads(row_engine),
                counter.count,
            )
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                row_engine.step()
            syncs = counter.count - syncs_before
            if profiling.events(row_engine) != events_before:
                event_syncs.append(syncs)
                continue
            steady_syncs.append(syncs)
            late_reads.append(profiling.late_reads(row_engine) - reads_before)
            steady_ops.append(_top_level_compute_ops(prof.events()))
    stages = profiling.stage_rows(row_engine)
    for _ in range(iterations):  # timed apart: neither the profiler nor the counters running
        events_before = profiling.events(row_engine)
        started = time.perf_counter()
        row_engine.step()
        elapsed = time.perf_counter() - started
        if profiling.events(row_engine) == events_before:
            wall.append(elapsed)
    return {
        "rows": rows,
        "semantic_rows": stages["semantic"],
        "coarse_rows": stages["coarse"],
        "steady_iterations": len(steady_syncs),
        "host_syncs_per_iteration": statistics.mean(steady_syncs) if steady_syncs else None,
        "late_reads_per_iteration": statistics.mean(late_reads) if late_reads else None,
        "eager_ops_per_iteration": statistics.mean(steady_ops) if steady_ops else None,
        "event_iterations": len(event_syncs),
        "host_syncs_per_event_iteration": statistics.mean(event_syncs) if event_syncs else None,
        "host_ms_per_iteration": round(statistics.median(wall) * 1e3, 3) if wall else None,
        "host_syncs_by_name": counter.by_name,
    }


class _Instrumented:
    """The row engine with its events (prefills, rows leaving) counted and its captured step marked,
    by wrapping methods that the loop had before issue #21 and has after it, so this script measures
    both (the "before" figures in RESULTS.md ran it on the commit before the rewrite)."""

    @staticmethod
    def row_engine(engine: BarkEngine, rows: int) -> Any:
        from torch.profiler import record_function

        from model_server.generation.continuous.bark_rows import BarkRowEngine

        row_engine = BarkRowEngine(engine, rows)
        row_engine.event_count = 0
        stepper = row_engine.stepper
        real_step, real_prefill, real_compact = stepper._step, stepper.prefill, row_engine._compact

        def captured(*args: Any) -> Any:
            with record_function(CAPTURED):
                return real_step(*args)

        def prefill(*args: Any) -> Any:
            row_engine.event_count += 1
            return real_prefill(*args)

        def compact(*args: Any) -> Any:
            row_engine.event_count += 1
            return real_compact(*args)

        stepper._step, stepper.prefill, row_engine._compact = captured, prefill, compact
        return row_engine

    @staticmethod
    def events(row_engine: Any) -> int:
        return int(row_engine.event_count)

    @staticmethod
    def late_reads(row_engine: Any) -> int:
        return int(getattr(row_engine, "late_reads", 0))  # the loop before #21 had none

    @staticmethod
    def stage_rows(row_engine: Any) -> dict[str, int]:
        return {stage: len(rows) for stage, rows in row_engine.rows.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_checkpoint(Path(folder) / args.size, size=args.size)
        engine = BarkEngine(Settings(model_dir=checkpoint, device="cpu", decoder="static", warmup=False))
        result = profile_loop(engine, args.rows, args.iterations)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34} {value}")


if __name__ == "__main__":
    main()
