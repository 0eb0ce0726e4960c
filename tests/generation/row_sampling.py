"""Host-built per-row sampling settings for tests of the on-device sampler (`choose_on_device`).

The serving loop keeps these settings on the device (slots.py); tests build them from lists here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_server.generation.continuous.sampling import choose_on_device, row_key


@dataclass(frozen=True)
class RowSampling:
    """The per-row settings of one sampling call, as device tensors (rows,)."""

    do_sample: torch.Tensor  # bool
    temperature: torch.Tensor  # float32, 1.0 where greedy
    keys: torch.Tensor  # int64 in [0, 2**32): row_key(seed, draws so far), the row's noise for this draw
    any_sample: bool = True  # host-side: when no row samples, warpers and noise are skipped

    @classmethod
    def of(
        cls,
        do_sample: list[bool],
        temperature: list[float],
        seeds: list[int],
        draws: list[int],
        device: torch.device,
    ) -> RowSampling:
        temps = [t if sample else 1.0 for t, sample in zip(temperature, do_sample, strict=True)]
        keys = [row_key(seed, draw) for seed, draw in zip(seeds, draws, strict=True)]
        return cls(
            do_sample=torch.tensor(do_sample, dtype=torch.bool, device=device),
            temperature=torch.tensor(temps, dtype=torch.float32, device=device),
            keys=torch.tensor(keys, dtype=torch.long, device=device),
            any_sample=any(do_sample),
        )


def warp(scores: torch.Tensor, rows: RowSampling, top_k: int) -> torch.Tensor:
    """Temperature and top-k as transformers' warpers, for sampled rows (greedy rows unchanged).

    Not on the sampling path (choose_on_device works on the top-k candidates directly): it checks
    that path against transformers' processors.
    """
    warped = scores / rows.temperature[:, None]
    kth = torch.topk(warped, min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
    warped = warped.masked_fill(warped < kth, -float("inf"))
    return torch.where(rows.do_sample[:, None], warped, scores)


def choose_tokens(scores: torch.Tensor, rows: RowSampling, top_k: int) -> torch.Tensor:
    """`choose_on_device` with these settings (the argmax alone where no row samples)."""
    if not rows.any_sample:
        return torch.argmax(scores, dim=-1)
    return choose_on_device(scores, rows.do_sample, rows.temperature, rows.keys, top_k)
