"""Bark's rules for one step of each stage, as a fixed-shape tensor program on the rows' slots.

Given one step's logits for rows [0, n) of a stage, choose each row's token (Bark's logit rules and
the row's own counter-based sampling, `sampling.py`) and decide what the token means for the row:
still running, its stage done, or (coarse) its window full. Everything reads and writes device
tensors in place (`slots.StageSlots`), with no host branch, so on a GPU it is captured in the same
graph as the transformer blocks; on a CPU the same function runs eagerly and chooses exactly the
tokens of the per-row loop it replaced (issue #21; `tests/generation/test_reference_outputs.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_server.generation.continuous.sampling import choose_on_device, coarse_scores, row_keys, semantic_scores
from model_server.generation.continuous.slots import DONE, IDLE, WINDOW_FULL, StageSlots

#: transformers' implicit top-k when sampling (GenerationConfig's default; Bark's configs keep it).
TOP_K = 50


@dataclass(frozen=True)
class SemanticRules:
    """Suppress non-semantic tokens, Bark's EOS prioritiser, then the row's sampling."""

    suppressed: torch.Tensor  # (vocab,) bool
    eos: int
    min_eos_p: float | None

    def status(self, token: torch.Tensor, rows: StageSlots, live: torch.Tensor) -> torch.Tensor:
        """EOS or the budget reached: the row's semantic tokens are done (EOS itself is not kept)."""
        is_eos = token == self.eos
        rows.generated.add_((live & ~is_eos).long())
        done = is_eos | (rows.generated >= rows.budget)
        return torch.where(done, DONE, 0)

    def scores(self, logits: torch.Tensor, rows: StageSlots) -> torch.Tensor:
        return semantic_scores(logits, self.suppressed, self.eos, self.min_eos_p)


@dataclass(frozen=True)
class CoarseRules:
    """The alternating-codebook rule (parity of the row's step in its own window), then sampling."""

    semantic_vocab: int
    codebook_size: int

    def status(self, token: torch.Tensor, rows: StageSlots, live: torch.Tensor) -> torch.Tensor:
        rows.generated.add_(live.long())
        full = rows.generated >= rows.budget
        return torch.where(full, torch.where(rows.last_window, DONE, WINDOW_FULL), 0)

    def scores(self, logits: torch.Tensor, rows: StageSlots) -> torch.Tensor:
        return coarse_scores(logits, rows.generated % 2, self.semantic_vocab, self.codebook_size)


StageRules = SemanticRules | CoarseRules


def choose_and_advance(logits: torch.Tensor, rows: StageSlots, rules: StageRules, out: torch.Tensor) -> None:
    """One token per row from this step's `logits` (rows, vocab); advance the rows that stepped.

    `out` (rows, 2) receives (token, status) per row: the one thing the host reads, a step later.
    Rows that did not step (free slots, rows waiting for the host) are left as they were, status IDLE.
    """
    live = rows.active.clone()
    logits = torch.where(rows.fresh[:, None], rows.pending, logits.float())
    scores = rules.scores(logits, rows)
    token = choose_on_device(scores, rows.do_sample, rows.temperature, row_keys(rows.seeds, rows.draws), TOP_K)
    rows.draws.add_(live.long())
    status = torch.where(live, rules.status(token, rows, live), IDLE)
    rows.positions.add_((live & ~rows.fresh).long())
    rows.fresh.logical_and_(~live)
    rows.tokens.copy_(torch.where(live, token, rows.tokens))
    rows.active.logical_and_(status == 0)
    out[:, 0].copy_(token)
    out[:, 1].copy_(status)
