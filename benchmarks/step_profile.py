"""Ops and host time of one semantic decoding step, before and after the continuous loop (issue #14).

before: `StaticBarkDecoder`'s step (one position for all rows; SDPA with a boolean mask, which
        each layer converts) + transformers' logits processors + `softmax` + `multinomial`, and the
        finished-row bookkeeping of its `_decode` loop;
after:  the continuous loop's step as it is now (issue #21): `RowStepper`'s one function from the
        rows' device slots to the next (per-row positions, one additive mask shared by all layers,
        Bark's rules and counter-based Gumbel-max sampling, the next token written in place; a
        graph on CUDA), then the one copy of its outputs to the host.
Both sample (temperature 0.7, top-k 50) as production does. torch.profiler counts the aten ops a
step dispatches (innermost compute ops, views and allocations left out: each is roughly one kernel
on a GPU; on CUDA the CUDA kernels are counted too);
host time is wall time per step without the profiler. Called by `decode_steps.py --profile-step`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

# This folder is on sys.path when run as a script (or imported by decode_steps.py).
from loop_profile import METADATA_OPS
from torch.profiler import ProfilerActivity, profile
from transformers import BarkModel, BarkProcessor
from transformers.generation.logits_process import BarkEosPrioritizerLogitsProcessor
from transformers.models.bark.generation_configuration_bark import BarkSemanticGenerationConfig

from model_server.generation.continuous.rules import SemanticRules
from model_server.generation.continuous.stepper import RowStepper
from model_server.generation.decoding import StaticBarkDecoder, _SuppressTokens

PROMPT = 257  # Bark's semantic prompt: 256 text/history positions + the infer token


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _before(model: BarkModel, device: torch.device, rows: int) -> Callable[[], None]:
    decoder = StaticBarkDecoder(model, device, max_batch_size=rows, use_cuda_graphs=device.type == "cuda")
    defaults = dict(model.generation_config.semantic_config)
    config = BarkSemanticGenerationConfig(**{**defaults, "do_sample": True, "temperature": 0.7})
    pad, vocab = int(config.semantic_pad_token), int(model.semantic.config.output_vocab_size)
    suppressed = [*range(config.semantic_vocab_size, pad), *range(pad + 1, vocab)]
    rules = [
        _SuppressTokens(suppressed, vocab, device),
        BarkEosPrioritizerLogitsProcessor(eos_token_id=pad, min_eos_p=config.min_eos_p, device=str(device)),
    ]
    _, processors = decoder._processors(decoder._semantic, config, list(rules), PROMPT, None)
    hidden = decoder._semantic.weights.hidden_size
    decoder._prefill(decoder._semantic, torch.randn(rows, PROMPT, hidden, device=device))
    seen = torch.ones((rows, PROMPT), dtype=torch.long, device=device)
    eos = torch.tensor([pad], device=device)
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    state = {"position": PROMPT, "tokens": torch.zeros(rows, dtype=torch.long, device=device)}

    def step() -> None:
        decoder._token[:rows].copy_(state["tokens"])
        logits = decoder._forward_token(decoder._semantic, rows, state["position"])
        scores = logits.to(dtype=torch.float32, copy=True)
        for processor in processors:
            scores = processor(seen, scores)
        tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad))
        unfinished.logical_and_(~torch.isin(tokens, eos))
        state["tokens"] = tokens
        state["position"] = min(state["position"] + 1, 1000)

    return step


def _after(model: BarkModel, device: torch.device, rows: int) -> Callable[[], None]:
    """The continuous loop's semantic step as it is now: one function (a graph on CUDA) from the rows'
    device slots to the next, rules and sampling included, then the one copy of its outputs to the host."""
    stepper = RowStepper(model, device, max_rows=rows, use_cuda_graphs=device.type == "cuda")
    stage = stepper.stages["semantic"]
    semantic = dict(model.generation_config.semantic_config)
    eos, vocab = int(semantic["semantic_pad_token"]), stage.vocab
    suppressed = torch.ones(vocab, dtype=torch.bool, device=device)
    suppressed[: int(semantic["semantic_vocab_size"])] = False
    suppressed[eos] = False
    stage.rules = SemanticRules(suppressed, eos, semantic.get("min_eos_p"))
    prompts = list(torch.randn(rows, PROMPT, stage.weights.hidden_size, device=device))
    slots = list(range(rows))
    logits = stepper.prefill("semantic", slots, prompts)
    stage.slots.join(
        slots,
        logits,
        [PROMPT] * rows,
        seeds=slots,
        draws=[0] * rows,
        temperature=[0.7] * rows,
        do_sample=[True] * rows,
        budget=[700] * rows,
        last_window=[False] * rows,
    )
    host = torch.empty(stepper.out.shape, dtype=torch.long, pin_memory=device.type == "cuda")

    def step() -> None:
        stepper.step("semantic", rows, PROMPT + 600)
        host.copy_(stepper.out, non_blocking=True)

    return step


def _is_compute(event: Any) -> bool:
    return event.name.startswith("aten::") and event.name not in METADATA_OPS


def _is_kernel(event: Any) -> bool:
    """An innermost compute op: no compute op below it (what becomes one kernel launch on a GPU)."""
    if not _is_compute(event):
        return False
    stack = list(event.cpu_children)
    while stack:
        child = stack.pop()
        if _is_compute(child):
            return False
        stack.extend(child.cpu_children)
    return True


def _measure(step: Callable[[], None], device: torch.device, repeats: int) -> dict[str, float]:
    for _ in range(3):  # warm-up (and graph capture on CUDA)
        step()
    _sync(device)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        _sync(device)
        timings.append((time.perf_counter() - started) / repeats)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            step()
        _sync(device)
    events = prof.events()
    aten = [event for event in events if event.name.startswith("aten::")]
    kernels_cpu = [event for event in aten if _is_kernel(event)]
    result = {
        "host_ms_per_step": round(statistics.median(timings) * 1e3, 3),
        "aten_ops_per_step": round(len(aten) / repeats, 1),
        "leaf_ops_per_step": round(len(kernels_cpu) / repeats, 1),
    }
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        result["cuda_kernels_per_step"] = round(len(kernels) / repeats, 1)
    return result


@torch.inference_mode()
def profile_steps(
    model: BarkModel, processor: BarkProcessor, device: torch.device, batches: list[int], repeats: int = 20
) -> None:
    """Print one markdown row per (batch, before/after)."""
    print(
        "| rows | step | host ms/step | aten ops/step (all levels) | compute ops/step (innermost) | CUDA kernels/step |"
    )
    print("|---|---|---|---|---|---|")
    for rows in batches:
        for name, build in (("before", _before), ("after", _after)):
            figures = _measure(build(model, device, rows), device, repeats)
            print(
                f"| {rows} | {name} | {figures['host_ms_per_step']} | {figures['aten_ops_per_step']} "
                f"| {figures['leaf_ops_per_step']} | {figures.get('cuda_kernels_per_step', 'n/a')} |",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    """`--loop`: one iteration of the real continuous loop (loop_profile.py); otherwise single steps
    are profiled through `decode_steps.py --profile-step`."""
    import argparse
    import sys

    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--loop", action="store_true", help="profile the real loop (see loop_profile.py --help)")
    known, rest = parser.parse_known_args(args)
    if not known.loop:
        parser.error("single steps are profiled by decode_steps.py --profile-step; pass --loop for the loop")
    from loop_profile import main as loop_main  # this folder is on sys.path when run as a script

    loop_main(rest)


if __name__ == "__main__":
    main()
