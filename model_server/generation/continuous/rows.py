"""A row: one chunk's state as it moves through the semantic and coarse stages, one token per step.

Everything a row needs to be generated exactly as it would be alone lives here: its voice history,
settings and seed, its position in its stage's cache, its draw counter (the noise stream), and in
the coarse stage its own sliding-window plan. The window arithmetic mirrors
`BarkCoarseModel.generate` line by line (float ratios, Python's round) for a batch of one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkFineGenerationConfig,
    BarkSemanticGenerationConfig,
)

from model_server.generation.engine import Sampling


@dataclass
class Configs:
    """The three generation configs the static engine would build for this row's settings."""

    semantic: BarkSemanticGenerationConfig
    coarse: BarkCoarseGenerationConfig
    fine: BarkFineGenerationConfig


@dataclass
class CoarsePlan:
    """One row's coarse sliding windows (see `BarkCoarseModel.generate`)."""

    semantic: torch.Tensor  # (history + own semantic tokens,) in coarse-prompt ids
    base_index: int  # where the row's own semantic tokens start in `semantic`
    ratio: float
    max_semantic_history: int
    output_length: int  # coarse tokens this row produces (a multiple of the codebook count)
    tokens: list[int]  # voice coarse history, then everything generated so far
    history_length: int
    window_new: int = 0  # tokens the current window generates
    window_step: int = 0  # tokens generated in the current window (its parity picks the codebook)

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.history_length

    def next_window_prompt(self, config: BarkCoarseGenerationConfig, device: torch.device) -> torch.Tensor:
        """The next window's prompt (1-D long); also sets `window_new` and resets `window_step`."""
        total = self.generated
        index = self.base_index + round(total / self.ratio)  # as generate: int(round(float))
        window = self.semantic[max(0, index - self.max_semantic_history) :][: config.max_coarse_input_length]
        window = F.pad(
            window, (0, config.max_coarse_input_length - window.shape[0]), value=config.coarse_semantic_pad_token
        )
        infer = torch.tensor([config.coarse_infer_token], dtype=torch.long, device=device)
        history = torch.tensor(self.tokens[-config.max_coarse_history :], dtype=torch.long, device=device)
        self.window_new = min(config.sliding_window_len, self.output_length - total)
        self.window_step = 0
        return torch.cat([window, infer, history])


@dataclass
class Row:
    """One chunk in flight. `job` is the scheduler's handle; the rest is generation state."""

    job: Any
    text: str
    voice: str | None
    sampling: Sampling
    budget: int
    seed: int  # 32 bits: the row's noise stream (drawn at first admission when the request has none)
    configs: Configs
    history: dict[str, torch.Tensor] | None
    stage: str = "semantic"
    position: int = 0  # the cache position the next fed token is written at
    next_token: int = 0
    fresh: torch.Tensor | None = None  # logits of a prefill, to be sampled at the next step
    draws: int = 0
    semantic: list[int] = field(default_factory=list)
    coarse: CoarsePlan | None = None
    stage_started: float = field(default_factory=time.perf_counter)

    @property
    def temperature(self) -> float:
        return self.sampling.semantic_temperature if self.stage == "semantic" else self.sampling.coarse_temperature


def coarse_plan(row: Row, coarse_model: Any, codebook_size: int, device: torch.device) -> CoarsePlan:
    """The coarse windows of `row` after its semantic stage, as `generate` would plan them alone."""
    semantic_config, coarse_config = row.configs.semantic, row.configs.coarse
    ratio = coarse_config.coarse_rate_hz / semantic_config.semantic_rate_hz * coarse_config.n_coarse_codebooks
    max_semantic_history = int(np.floor(coarse_config.max_coarse_history / ratio))
    codebooks = coarse_config.n_coarse_codebooks
    # In torch, as `generate` computes it (a float32 product: float64 could round differently).
    frames = torch.floor(torch.tensor([len(row.semantic)]) * ratio / codebooks)
    output_length = int(torch.round(frames * codebooks).int().item())
    semantic_history, coarse_history = coarse_model.preprocess_histories(
        history_prompt=row.history,
        max_coarse_history=coarse_config.max_coarse_history,
        semantic_to_coarse_ratio=ratio,
        batch_size=1,
        semantic_generation_config=semantic_config,
        codebook_size=codebook_size,
    )
    own = torch.tensor(row.semantic, dtype=torch.long, device=device)
    semantic = torch.cat([semantic_history.to(device).long().reshape(-1), own])
    history = [int(token) for token in coarse_history.reshape(-1).tolist()]
    return CoarsePlan(
        semantic=semantic,
        base_index=int(semantic_history.shape[1]),
        ratio=ratio,
        max_semantic_history=max_semantic_history,
        output_length=output_length,
        tokens=history,
        history_length=len(history),
    )
