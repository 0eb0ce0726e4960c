"""Decoding steps per second of Bark's semantic and coarse stages: transformers vs static vs cudagraph.

Same weights, same greedy tokens, three decoders:
  transformers  `model.semantic.generate` / `model.coarse_acoustics.generate` (what the engine runs
                without a decoder), with our SDPA attention as the engine loads it;
  static        `model_server.generation.decoding.StaticBarkDecoder`, the one-token step run eagerly;
  cudagraph     the same decoder with the step replayed as a CUDA graph (CUDA only).
A step is one new token for every row of the batch; coarse steps include each sliding window's
prefill, as in production. Graph capture is timed apart (`capture_s`) and excluded from steps/s.
Greedy decoding makes every decoder run the same number of steps; `same_tokens` says whether they
also produced the same tokens (fp32: they should; fp16 may differ after a near-tie).

Random weights (almost) never emit EOS, so every row runs to `--semantic-tokens`.

`--sample` samples (temperature 0.7, top-k 50, seeded) as production does instead of decoding
greedily; the decoders then draw from different random streams, so `same_tokens` is not reported.
`--profile-step` instead profiles single semantic steps with torch.profiler: the batch decoder's
step + its logits processors + `multinomial` (before issue #14) against the continuous loop's
per-row-position step + fused per-row sampling (after), as ops per step and host ms per step.

Usage:
  python benchmarks/decode_steps.py --size tiny --quick          # CPU smoke run
  python benchmarks/decode_steps.py --size small                 # on a GPU: all three decoders
  python benchmarks/decode_steps.py --size large --batches 1 8 32 --semantic-tokens 256
  python benchmarks/decode_steps.py --size tiny --quick --sample
  python benchmarks/decode_steps.py --size small --profile-step --batches 1 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transformers import BarkModel, BarkProcessor  # noqa: E402
from transformers.models.bark.generation_configuration_bark import (  # noqa: E402
    BarkCoarseGenerationConfig,
    BarkSemanticGenerationConfig,
)

from model_server.generation.attention import use_sdpa_attention  # noqa: E402
from model_server.generation.decoding import StaticBarkDecoder  # noqa: E402
from model_server.generation.engine import tokenize_chunks  # noqa: E402
from model_server.tiny import build_checkpoint  # noqa: E402

TEXTS = [
    "The morning fog rolled slowly over the harbor, hiding the fishing boats.",
    "On the pier, an old man sat on a wooden crate and mended a net.",
    "Children ran past him on their way to school, laughing and shouting.",
    "By nine o'clock the sun had burned away the mist.",
]
VOICE = "v2/en_speaker_6"


def checkpoint_for(size: str, cache: Path) -> Path:
    folder = cache / f"bark-{size}"
    if not (folder / "config.json").exists():
        print(f"building a random-weight {size} checkpoint in {folder} ...", file=sys.stderr, flush=True)
        build_checkpoint(folder, size=size)
    return folder


def device_label(device: torch.device) -> str:
    """The machine a figure came from, for a benchmark's header line."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def engine_header(size: str, engine: Any, tokens_per_word: float) -> str:
    """The start of a service-level benchmark's header: checkpoint, machine, dtype, token budget."""
    return f"# {size} checkpoint, {device_label(engine.device)}, {engine.dtype}, {tokens_per_word} tokens/word"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    started = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - started, result


@dataclass
class Bench:
    """One model and its decoders; each method runs one stage for the given decoder kind."""

    model: BarkModel
    decoders: dict[str, StaticBarkDecoder]
    history: dict[str, torch.Tensor] | None
    semantic_config: BarkSemanticGenerationConfig
    coarse_config: BarkCoarseGenerationConfig
    codebook_size: int

    def semantic(self, kind: str, encoded: Any) -> torch.Tensor:
        if kind == "transformers":
            # Every row has the same budget, so max_new_tokens alone is the engine's criterion.
            return self.model.semantic.generate(
                encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                history_prompt=self.history,
                semantic_generation_config=self.semantic_config,
                pad_token_id=self.semantic_config.semantic_pad_token,
            )
        budgets = [int(self.semantic_config.max_new_tokens)] * int(encoded["input_ids"].shape[0])
        return self.decoders[kind].semantic(
            encoded["input_ids"], encoded["attention_mask"], self.history, self.semantic_config, budgets
        )

    def coarse(self, kind: str, semantic: torch.Tensor) -> torch.Tensor:
        if kind == "transformers":
            coarse, _ = self.model.coarse_acoustics.generate(
                semantic.clone(),  # transformers overwrites its input in place
                history_prompt=self.history,
                semantic_generation_config=self.semantic_config,
                coarse_generation_config=self.coarse_config,
                codebook_size=self.codebook_size,
                return_output_lengths=True,
            )
            return coarse
        coarse, _ = self.decoders[kind].coarse(
            semantic, self.history, self.semantic_config, self.coarse_config, self.codebook_size
        )
        return coarse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small", "large"], default="tiny")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--semantic-tokens", type=int, default=None, help="default 200, 24 with --quick")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (median); default 2")
    parser.add_argument("--quick", action="store_true", help="few tokens, one timed run: a smoke test")
    parser.add_argument("--voice", action="store_true", help=f"use the {VOICE} history prompt")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--sample", action="store_true", help="sample (temperature 0.7, top-k 50), not greedy")
    parser.add_argument("--profile-step", action="store_true", help="ops and host time per step, before/after")
    args = parser.parse_args(argv)
    semantic_tokens = args.semantic_tokens or (24 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 2)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    source = checkpoint_for(args.size, args.cache_dir)
    processor = BarkProcessor.from_pretrained(source)
    model = BarkModel.from_pretrained(source, dtype=dtype, attn_implementation="eager")
    use_sdpa_attention(model)
    model = model.to(device).eval()  # type: ignore[arg-type]
    defaults = model.generation_config
    if args.profile_step:
        from step_profile import profile_steps  # this folder is on sys.path when run as a script

        profile_steps(model, processor, device, args.batches, repeats=args.repeats or 20)
        return
    greedy = {"do_sample": True, "temperature": 0.7} if args.sample else {"do_sample": False, "temperature": 1.0}
    semantic_config = BarkSemanticGenerationConfig(
        **{**dict(defaults.semantic_config), **greedy, "max_new_tokens": semantic_tokens}
    )
    coarse_config = BarkCoarseGenerationConfig(**{**dict(defaults.coarse_acoustics_config), **greedy})
    codebook_size = int(defaults.codebook_size)
    history = None
    if args.voice:
        encoded_voice = processor("", voice_preset=VOICE, return_tensors="pt")["history_prompt"]
        history = {key: value.to(device) for key, value in encoded_voice.items()}

    header = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": args.size,
        "dtype": str(dtype).removeprefix("torch."),
        "semantic_tokens": semantic_tokens,
        "voice": args.voice,
        "repeats": repeats,
        "sample": args.sample,
    }
    print(json.dumps(header), flush=True)
    kinds = ["transformers", "static"] + (["cudagraph"] if device.type == "cuda" else [])
    max_batch = max(args.batches)
    decoders = {
        "static": StaticBarkDecoder(model, device, max_batch_size=max_batch),
        **(
            {"cudagraph": StaticBarkDecoder(model, device, use_cuda_graphs=True, max_batch_size=max_batch)}
            if "cudagraph" in kinds
            else {}
        ),
    }

    bench = Bench(model, decoders, history, semantic_config, coarse_config, codebook_size)
    rows_out: list[dict[str, Any]] = []
    with torch.inference_mode():
        for batch in args.batches:
            texts = [TEXTS[i % len(TEXTS)] for i in range(batch)]
            encoded = tokenize_chunks(processor.tokenizer, texts, semantic_config.max_input_semantic_length, device)
            reference: dict[str, torch.Tensor] = {}
            for kind in kinds:
                capture_s = None
                if kind == "cudagraph":
                    capture_s, _ = timed(device, partial(decoders["cudagraph"].capture_graphs, batch))
                # Warm-up: lazy initialisation, the allocator, any graph not captured above.
                bench.coarse(kind, bench.semantic(kind, encoded))
                seconds: dict[str, list[float]] = {"semantic": [], "coarse": []}
                outputs: dict[str, torch.Tensor] = {}
                for _ in range(repeats):
                    torch.manual_seed(0)
                    elapsed, outputs["semantic"] = timed(device, partial(bench.semantic, kind, encoded))
                    seconds["semantic"].append(elapsed)
                    elapsed, outputs["coarse"] = timed(device, partial(bench.coarse, kind, outputs["semantic"]))
                    seconds["coarse"].append(elapsed)
                for stage in ("semantic", "coarse"):
                    steps = int(outputs[stage].shape[1])
                    median = statistics.median(seconds[stage])
                    if kind == "transformers":
                        reference[stage] = outputs[stage]
                    row: dict[str, Any] = {
                        "stage": stage,
                        "batch": batch,
                        "decoder": kind,
                        "steps": steps,
                        "seconds": round(median, 4),
                        "steps_per_s": round(steps / median, 1),
                        "same_tokens": None
                        if args.sample
                        else bool(torch.equal(outputs[stage].cpu(), reference[stage].cpu())),
                    }
                    if capture_s is not None:
                        row["capture_s"] = round(capture_s, 3)
                    rows_out.append(row)
                    print(json.dumps(row), flush=True)

    print()
    print(f"{'stage':<9} {'batch':>5} {'decoder':<13} {'steps/s':>9} {'x transformers':>15} {'same':>5}")
    base = {(r["stage"], r["batch"]): r["steps_per_s"] for r in rows_out if r["decoder"] == "transformers"}
    for r in rows_out:
        ratio = r["steps_per_s"] / base[(r["stage"], r["batch"])]
        print(
            f"{r['stage']:<9} {r['batch']:>5} {r['decoder']:<13} {r['steps_per_s']:>9.1f} "
            f"{ratio:>14.2f}x {r['same_tokens']!s:>5}"
        )


if __name__ == "__main__":
    main()
