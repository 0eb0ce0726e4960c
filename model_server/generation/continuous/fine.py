"""Bark's fine stage for a group of rows of any voice, length and settings, in one batched pass.

transformers' `BarkFineModel.generate` takes one voice prompt and one length per call and draws
from `torch.multinomial`'s global stream, so the continuous loop used to run it once per finished
row, alone, while every other row waited: on an H200 that is ~22 ms per chunk for bark-small, against
~7 ms per chunk when 32 go together (the probes' fine stage at batch 1 and 32). Here the rows that
finish their coarse tokens in the same step share every forward:

- The windows are transformers' (`max_fine_input_length` positions, advancing by
  `max_fine_history_length`, the voice's fine prompt in front), computed per row. Every window has
  the same length, so rows at different windows (a short row's first, a long row's second) stack
  into one `(rows, window, codebooks)` input; a row stops taking part after its last window.
- Each new codebook is predicted for the whole group in one forward; a row writes only the
  positions past its own history (its `fill_from`), as transformers does.
- Sampling is per row: argmax when the row's temperature is None or 1.0 (transformers' rule), else
  an inverse-CDF draw from softmax(logits / temperature) with one counter-based uniform per position
  (`sampling.uniform_noise` keyed by the row's seed, window and codebook). A row's tokens are a
  function of its own inputs and seed, so they are the same alone and in any group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.models.bark.generation_configuration_bark import BarkFineGenerationConfig
from transformers.models.bark.modeling_bark import BarkFineModel

from model_server.generation.continuous.sampling import row_key, uniform_noise

__all__ = ["FineRow", "generate_fine"]


@dataclass(frozen=True)
class FineRow:
    """One chunk's input to the fine stage."""

    #: (frames, n_coarse) coarse codes in [0, codebook_size): the coarse tokens less the semantic vocab.
    coarse: torch.Tensor
    #: (frames, n_fine) the voice's fine prompt, or None without a voice.
    history: torch.Tensor | None
    #: The fine temperature; None or 1.0 decodes greedily (argmax), as transformers does.
    temperature: float | None
    #: The row's seed for the fine stage's draws.
    seed: int


@dataclass
class _Plan:
    """A row's input sequence and its windows (transformers' arithmetic, per row)."""

    tokens: torch.Tensor  # (length, n_fine): history, the row's frames, padding to a full window
    n_history: int
    frames: int
    windows: int

    def window(self, index: int, config: BarkFineGenerationConfig) -> tuple[int, int, int]:
        """(start, fill_start, fill_from): the window's first position, the first position it writes
        back to, and that position inside the window."""
        window, step = config.max_fine_input_length, config.max_fine_history_length
        length = self.tokens.shape[0]
        start = min(index * step, length - window)
        fill_start = min(self.n_history + index * step, length - step)
        return start, fill_start, fill_start - start


def _plan(row: FineRow, config: BarkFineGenerationConfig, codebook_size: int) -> _Plan:
    window, step = config.max_fine_input_length, config.max_fine_history_length
    n_coarse = row.coarse.shape[1]
    tokens = F.pad(row.coarse, (0, config.n_fine_codebooks - n_coarse), value=codebook_size)
    n_history = 0
    if row.history is not None:
        history = row.history[-step:].to(tokens)
        tokens = torch.cat([history, tokens])
        n_history = history.shape[0]
    if tokens.shape[0] < window:
        tokens = F.pad(tokens, (0, 0, 0, window - tokens.shape[0]), value=codebook_size)
    frames = row.coarse.shape[0]
    windows = max(0, math.ceil((frames - (window - n_history)) / step)) + 1
    return _Plan(tokens.clone(), n_history, frames, windows)


def _choose(
    logits: torch.Tensor, temperatures: list[float | None], keys: list[int], codebook_size: int
) -> torch.Tensor:
    """One code per position (rows, window): argmax, or an inverse-CDF draw at each row's temperature."""
    scores = logits[:, :, :codebook_size].float()
    chosen = scores.argmax(dim=-1)
    sampled = [index for index, temperature in enumerate(temperatures) if temperature not in (None, 1.0)]
    if not sampled:
        return chosen
    rows = torch.tensor(sampled, device=logits.device)
    temperature = torch.tensor([temperatures[index] for index in sampled], device=logits.device)
    probabilities = torch.softmax(scores[rows] / temperature[:, None, None], dim=-1)
    positions = torch.arange(scores.shape[1], device=logits.device).expand(len(sampled), -1)
    row_keys = torch.tensor([keys[index] for index in sampled], dtype=torch.long, device=logits.device)
    uniforms = uniform_noise(row_keys, positions)  # (sampled rows, window): one per position
    cumulative = probabilities.cumsum(dim=-1)
    # The first code whose cumulative probability passes the uniform; rounding can leave the last
    # cumulative value a hair under 1, hence the clamp.
    draws = torch.searchsorted(cumulative, (uniforms * cumulative[..., -1]).unsqueeze(-1)).squeeze(-1)
    chosen[rows] = draws.clamp_(max=codebook_size - 1)
    return chosen


@torch.inference_mode()
def generate_fine(
    model: BarkFineModel,
    rows: Sequence[FineRow],
    config: BarkFineGenerationConfig,
    codebook_size: int,
) -> list[torch.Tensor]:
    """Fine codes (n_fine, frames) for every row, in order; one forward per window step and codebook."""
    plans = [_plan(row, config, codebook_size) for row in rows]
    n_coarse = rows[0].coarse.shape[1] if rows else 0
    window = config.max_fine_input_length
    for index in range(max((plan.windows for plan in plans), default=0)):
        active = [number for number, plan in enumerate(plans) if plan.windows > index]
        spans = [plans[number].window(index, config) for number in active]
        buffer = torch.stack(
            [plans[number].tokens[span[0] : span[0] + window] for number, span in zip(active, spans, strict=True)]
        )
        fill_from = torch.tensor([span[2] for span in spans], device=buffer.device)
        writable = torch.arange(window, device=buffer.device)[None, :] >= fill_from[:, None]
        temperatures = [rows[number].temperature for number in active]
        for codebook in range(n_coarse, config.n_fine_codebooks):
            logits = model(codebook, buffer).logits
            keys = [row_key(rows[number].seed, index * config.n_fine_codebooks + codebook) for number in active]
            codes = _choose(logits, temperatures, keys, codebook_size)
            buffer[:, :, codebook] = torch.where(writable, codes.to(buffer.dtype), buffer[:, :, codebook])
        for slot, (number, (_, fill_start, fill_from_row)) in enumerate(zip(active, spans, strict=True)):
            written = buffer[slot, fill_from_row:, n_coarse:]
            plans[number].tokens[fill_start : fill_start + written.shape[0], n_coarse:] = written
    return [plan.tokens[plan.n_history : plan.n_history + plan.frames].T.contiguous() for plan in plans]
