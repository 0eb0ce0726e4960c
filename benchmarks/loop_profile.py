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
import functools
import json
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decode_steps import checkpoint_for, synchronize

from model_server.config import Settings
from model_server.generation.engine import BarkEngine, Sampling

REPO = Path(__file__).resolve().parents[1]

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
        "aten::split",
        "aten::split_with_sizes",
        "aten::unbind",
        "aten::resize_",
        "aten::numpy_T",
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
    """Run the real row engine; count host syncs, late reads and eager ops per steady iteration, and
    time steady iterations against the captured block steps of the same rows."""
    profiling = _Instrumented
    cuda = engine.device.type == "cuda"
    row_engine = profiling.row_engine(engine, rows)
    if cuda:
        row_engine.capture_graphs()
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
    launches: list[dict[str, int]] = []
    with counter.installed(), _cuda_sync_warnings(cuda) as waits:
        for _ in range(iterations):
            events_before, syncs_before = profiling.events(row_engine), counter.count
            reads_before, waits_before = profiling.late_reads(row_engine), len(waits)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                row_engine.step()
            syncs = counter.count - syncs_before + len(waits) - waits_before
            if profiling.events(row_engine) != events_before:
                event_syncs.append(syncs)
                continue
            steady_syncs.append(syncs)
            late_reads.append(profiling.late_reads(row_engine) - reads_before)
            steady_ops.append(_top_level_compute_ops(prof.events()))
            launches.append(_runtime_calls(prof.events()))
    stages = profiling.stage_rows(row_engine)
    wall: list[float] = []
    for _ in range(iterations):  # timed apart: neither the profiler nor the counters running
        events_before = profiling.events(row_engine)
        started = time.perf_counter()
        row_engine.step()  # on a GPU this waits for the previous iteration: the GPU's pace
        elapsed = time.perf_counter() - started
        if profiling.events(row_engine) == events_before:
            wall.append(elapsed)
    # The loop before issue #21 had no separate block forward to time (its step was the blocks alone).
    block_ms = _block_steps_ms(row_engine, stages) if hasattr(row_engine.stepper, "forward") else None
    iteration_ms = statistics.median(wall) * 1e3 if wall else None
    result: dict[str, Any] = {
        "rows": rows,
        "device": str(engine.device),
        "semantic_rows": stages["semantic"],
        "coarse_rows": stages["coarse"],
        "steady_iterations": len(steady_syncs),
        "host_syncs_per_iteration": statistics.mean(steady_syncs) if steady_syncs else None,
        "late_reads_per_iteration": statistics.mean(late_reads) if late_reads else None,
        "eager_ops_per_iteration": statistics.mean(steady_ops) if steady_ops else None,
        "event_iterations": len(event_syncs),
        "host_syncs_per_event_iteration": statistics.mean(event_syncs) if event_syncs else None,
        "iteration_ms": round(iteration_ms, 3) if iteration_ms else None,
        "block_steps_ms": round(block_ms, 3) if block_ms else None,
        "iteration_vs_block_steps": round(iteration_ms / block_ms, 2) if iteration_ms and block_ms else None,
        "host_syncs_by_name": counter.by_name,
    }
    if cuda:
        result["cuda_calls_per_iteration"] = {
            name: round(statistics.mean(call.get(name, 0) for call in launches), 2)
            for name in sorted({name for call in launches for name in call})
        }
    if hasattr(row_engine, "close"):  # the finisher's thread (since issue #21)
        row_engine.close()
    return result


@contextlib.contextmanager
def _cuda_sync_warnings(cuda: bool) -> Iterator[list[Any]]:
    """On CUDA: torch's sync debug mode warns at every synchronising call; the warnings are collected."""
    if not cuda:
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _runtime_calls(events: Any) -> dict[str, int]:
    """CUDA runtime calls made by the host in one iteration: graph launches, kernel launches, copies."""
    names = ("cudaGraphLaunch", "cudaLaunchKernel", "cudaMemcpyAsync", "cudaEventRecord", "cudaStreamSynchronize")
    calls: dict[str, int] = {}
    for event in events:
        for name in names:
            if event.name.startswith(name):
                calls[name] = calls.get(name, 0) + 1
    return calls


def _block_steps_ms(row_engine: Any, stages: dict[str, int]) -> float:
    """The transformer blocks alone (embeddings to logits), for each active stage's rows at its current
    key range, replayed as CUDA graphs on a GPU (eager on a CPU): what an iteration cannot beat."""
    stepper = row_engine.stepper
    total = 0.0
    for name, count in stages.items():
        if not count:
            continue
        stage = stepper.stages[name]
        bucket = stepper.bucket(count)
        highest = max(row.position for row in row_engine.rows[name])
        kv_len = stepper.kv_len(name, highest)
        tokens = torch.zeros(bucket, dtype=torch.long, device=stepper.device)
        positions = torch.full((bucket,), highest, dtype=torch.long, device=stepper.device)

        forward = functools.partial(stepper.forward, stage, tokens, positions, kv_len)
        run = forward
        if stepper.device.type == "cuda":
            captured = stepper.graphs.capture(forward)
            run = captured.graph.replay
        for _ in range(3):
            run()
        repeats = 50
        synchronize(stepper.device)
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        synchronize(stepper.device)
        total += (time.perf_counter() - started) / repeats
    return total * 1e3


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
    parser.add_argument("--rows", type=int, nargs="+", default=[8])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--attention", choices=["auto", "sdpa", "flash_attention_2"], default="auto", help="flash-attn: CUDA only"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per --rows value instead of a table")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    checkpoint = checkpoint_for(args.size, args.cache_dir)  # built once, shared with the other benchmarks
    decoder = "static" if args.device == "cpu" else "auto"
    settings = Settings(model_dir=checkpoint, device=args.device, decoder=decoder, attention=args.attention)
    engine = BarkEngine(settings.model_copy(update={"warmup": False}))
    print(f"# {args.size} shapes on {engine.device}, {engine.dtype}, attention {engine.attention}", flush=True)
    for rows in args.rows:
        results.append(profile_loop(engine, rows, args.iterations))
        if args.json:
            print(json.dumps(results[-1]), flush=True)
    if not args.json:
        print(
            "| rows | semantic + coarse | host syncs / iteration | late reads | eager ops | iteration (ms) "
            "| block steps (ms) | iteration / block steps |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['rows']} | {r['semantic_rows']} + {r['coarse_rows']} | {r['host_syncs_per_iteration']} "
                f"| {r['late_reads_per_iteration']} | {r['eager_ops_per_iteration']} | {r['iteration_ms']} "
                f"| {r['block_steps_ms']} | {r['iteration_vs_block_steps']} |"
            )
        for r in results:
            if "cuda_calls_per_iteration" in r:
                print(f"rows {r['rows']}: CUDA runtime calls per iteration {r['cuda_calls_per_iteration']}")


if __name__ == "__main__":
    main()
