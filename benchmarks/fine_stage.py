"""The fine stage of N chunks that finish together: transformers per chunk vs ours per chunk vs ours batched.

The continuous loop used to run `BarkFineModel.generate` once per finished chunk (transformers, per
row, under a forked random stream); it now runs `continuous/fine.py`, per row on a CPU and as one
batched pass for the rows that finish in the same step on CUDA. This prints the three for the same
rows (mixed voices, lengths of 1 to 4 windows, sampled at fine temperature 0.5), the median of
`--repeats` rounds, and the ratios against transformers per row.

`--loop` instead runs the continuous row engine itself on 4 chunks of 4 voices (250 semantic tokens
each, one torch thread) and prints the loop's wall time and the fine stage's share of it (the sums
of `bark_stage_duration_seconds`), the median of `--repeats` rounds.

Usage:
  python benchmarks/fine_stage.py --size tiny --rows 1 4 8            # CPU
  python benchmarks/fine_stage.py --size tiny --loop
  python benchmarks/fine_stage.py --size small --device cuda --rows 1 8 32
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model_server import metrics  # noqa: E402
from model_server.config import Settings  # noqa: E402
from model_server.generation.continuous.bark_rows import BarkRowEngine  # noqa: E402
from model_server.generation.continuous.fine import FineRow, generate_fine  # noqa: E402
from model_server.generation.engine import BarkEngine, Sampling  # noqa: E402
from model_server.tiny import build_checkpoint  # noqa: E402

#: Chunk lengths in frames (75 per second of audio): 1 to 4 fine windows.
FRAMES = (150, 450, 700, 975, 1300)


def timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop", action="store_true", help="time the row engine's loop instead")
    args = parser.parse_args()

    checkpoint = build_checkpoint(Path(tempfile.mkdtemp()) / "bark", size=args.size)
    engine = BarkEngine(Settings(model_dir=checkpoint, device=args.device, decoder="static", warmup=False))
    if args.loop:
        loop_figures(engine, args.repeats)
        return
    device = engine.device
    semantic, coarse, fine = engine._configs(Sampling(fine_temperature=0.5), 30)
    voices = list(engine.voices.names)
    codebook = engine.codebook_size
    model = engine.model.fine_acoustics
    offsets = torch.tensor([0, codebook], device=device) + semantic.semantic_vocab_size
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "device": str(device),
                "torch_threads": torch.get_num_threads(),
                "size": args.size,
            }
        )
    )
    for count in args.rows:
        generator = torch.Generator().manual_seed(count)
        rows = []
        for index in range(count):
            frames = FRAMES[index % len(FRAMES)]
            voice = voices[index % len(voices)]
            codes = torch.randint(0, codebook, (frames, 2), generator=generator).to(device)
            rows.append(FineRow(codes, engine.voices.prompt(voice)["fine_prompt"].to(device).T, 0.5, index))

        def transformers_per_row(rows: list[FineRow] = rows) -> None:
            for row in rows:
                torch.manual_seed(row.seed)
                model.generate(
                    (row.coarse + offsets).reshape(1, -1),
                    history_prompt={"fine_prompt": row.history.T} if row.history is not None else None,
                    semantic_generation_config=semantic,
                    coarse_generation_config=coarse,
                    fine_generation_config=fine,
                    codebook_size=codebook,
                )

        def ours_per_row(rows: list[FineRow] = rows) -> None:
            for row in rows:
                generate_fine(model, [row], fine, codebook)

        def ours_batched(rows: list[FineRow] = rows) -> None:
            generate_fine(model, rows, fine, codebook)

        with torch.inference_mode():
            ours_batched()  # warm-up (allocations, kernels)
            figures = {}
            for name, run in (
                ("transformers_per_row", transformers_per_row),
                ("ours_per_row", ours_per_row),
                ("ours_batched", ours_batched),
            ):
                figures[name] = statistics.median(timed(run, device) for _ in range(args.repeats))
        base = figures["transformers_per_row"]
        print(
            json.dumps(
                {
                    "rows": count,
                    **{f"{name}_s": round(value, 3) for name, value in figures.items()},
                    "per_row_speedup": round(base / figures["ours_per_row"], 2),
                    "batched_speedup": round(base / figures["ours_batched"], 2),
                }
            )
        )


def _fine_seconds() -> float:
    return sum(
        sample.value
        for family in metrics.STAGE_LATENCY.collect()
        for sample in family.samples
        if sample.name.endswith("_sum") and sample.labels.get("stage") == "fine"
    )


def loop_figures(engine: BarkEngine, repeats: int) -> None:
    torch.set_num_threads(1)
    walls, fines = [], []
    for _ in range(repeats):
        rows = BarkRowEngine(engine, max_rows=8)
        jobs = [
            SimpleNamespace(
                key=(f"v2/en_speaker_{index}", Sampling(seed=index)),
                payload=SimpleNamespace(text="Some words to speak here.", budget=250),
                seed=None,
            )
            for index in range(4)
        ]
        fine_before, started = _fine_seconds(), time.perf_counter()
        rows.admit(jobs)
        while rows.active:
            rows.step()
        walls.append(time.perf_counter() - started)
        fines.append(_fine_seconds() - fine_before)
    wall, fine = statistics.median(walls), statistics.median(fines)
    print(json.dumps({"loop_wall_s": round(wall, 3), "fine_s": round(fine, 3), "fine_share": round(fine / wall, 2)}))


if __name__ == "__main__":
    main()
