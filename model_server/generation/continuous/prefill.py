"""Prefill many rows' prompts into their cache slots in one call.

Rows enter a stage's cache by a prompt (a semantic row's text and voice history; a coarse row's
window of semantic tokens, the infer token and its coarse history). Before issue #21 the coarse
windows were prefilled one row at a time, uncaptured: about every 60 coarse steps each row ran an
887-token prompt alone, so with 32 coarse rows about every other step carried a prefill. Now the
rows that need one in the same iteration share it:

- on CUDA the prompts are padded on the right to the stage's longest prompt and the rows to a
  power-of-two bucket (repeating the first row, whose writes are then the same twice), so every
  bucket is one static shape, captured once as a graph and replayed;
- on a CPU rows of equal length go together unpadded (padding there is only more arithmetic).

Right padding is exact for the rows' own positions: attention is causal, so no real position sees
a padded one; a row's logits are read at its own last position, and the K/V the padding leaves past
it are masked out by every step (keys <= the row's position) and overwritten as it advances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from model_server.generation.bark_blocks import _StageWeights, attention_inputs, block_tail, head
from model_server.generation.continuous.slots import upload
from model_server.generation.cuda_graphs import GraphCache
from model_server.generation.step_runner import batch_bucket

#: Static inputs of a captured prefill: embeds, slot index, last position.
_StaticInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def prefill_rows(
    weights: _StageWeights,
    keys: torch.Tensor,
    values: torch.Tensor,
    slots: Sequence[int],
    prompts: Sequence[torch.Tensor],
    dtype: torch.dtype,
    *,
    padded: PaddedPrefill | None = None,
) -> torch.Tensor:
    """K/V of each prompt ((length, hidden) embeds) into its slot of `keys`/`values` (layers, slots,
    heads, positions, head_dim); returns each row's last logits (rows, vocab) as float32, in order.
    `padded` pads every row to one shape (CUDA); without it rows of equal length go together."""
    if padded is not None:
        return padded(weights, keys, values, slots, prompts, dtype)
    logits: list[torch.Tensor | None] = [None] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(int(prompt.shape[0]), []).append(index)
    for length, members in by_length.items():
        embeds = torch.stack([prompts[index] for index in members])
        slot_index = upload([slots[member] for member in members], torch.long, embeds.device)
        last = torch.full((len(members),), length - 1, dtype=torch.long, device=embeds.device)
        group = run_prefill(weights, keys, values, slot_index, embeds, last, dtype)
        for position, member in enumerate(members):
            logits[member] = group[position]
    return torch.stack([row for row in logits if row is not None])


def run_prefill(
    weights: _StageWeights,
    keys: torch.Tensor,
    values: torch.Tensor,
    slot_index: torch.Tensor,
    embeds: torch.Tensor,
    last: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The prefill itself: static shapes, no host sync (capturable). Logits at `last` (rows, vocab) float32."""
    rows, length, _ = embeds.shape
    positions = torch.arange(length, device=embeds.device)
    x = embeds.to(dtype) + F.embedding(positions, weights.position_embedding)[None]
    scale = 1.0 / math.sqrt(weights.head_dim)
    for layer_index, layer in enumerate(weights.layers):
        query, key, value = attention_inputs(weights, layer, x)
        keys[layer_index, :, :, :length].index_copy_(0, slot_index, key)
        values[layer_index, :, :, :length].index_copy_(0, slot_index, value)
        attended = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)
        x = block_tail(weights, layer, x, attended)
    final = x.gather(1, last.view(rows, 1, 1).expand(rows, 1, x.shape[-1]))[:, 0]
    return head(weights, final).float()


class PaddedPrefill:
    """Prefills of one stage padded to one length and a rows bucket, each bucket one graph on CUDA.

    The graph reads static inputs (embeds, slot index, last position per bucket), which are filled
    before each replay.
    """

    def __init__(self, stage: str, length: int, graphs: GraphCache | None):
        self.stage = stage
        self.length = length
        self.graphs = graphs
        self._inputs: dict[int, _StaticInputs] = {}

    def __call__(
        self,
        weights: _StageWeights,
        keys: torch.Tensor,
        values: torch.Tensor,
        slots: Sequence[int],
        prompts: Sequence[torch.Tensor],
        dtype: torch.dtype,
    ) -> torch.Tensor:
        rows = len(prompts)
        bucket = batch_bucket(rows)
        if bucket not in self._inputs:
            device, hidden = prompts[0].device, int(prompts[0].shape[-1])
            self._inputs[bucket] = (
                torch.zeros(bucket, self.length, hidden, dtype=prompts[0].dtype, device=device),
                torch.zeros(bucket, dtype=torch.long, device=device),
                torch.zeros(bucket, dtype=torch.long, device=device),
            )
        embeds, slot_index, last = self._inputs[bucket]
        order = list(range(rows)) + [0] * (bucket - rows)  # padding rows repeat the first: the same writes twice
        embeds.zero_()
        for target, source in enumerate(order):
            embeds[target, : prompts[source].shape[0]].copy_(prompts[source])
        slot_index.copy_(upload([slots[source] for source in order], torch.long, slot_index.device))
        last.copy_(upload([int(prompts[source].shape[0]) - 1 for source in order], torch.long, last.device))

        def step() -> torch.Tensor:
            return run_prefill(weights, keys, values, slot_index, embeds, last, dtype)

        if self.graphs is None:
            return step()[:rows]
        return self.graphs.run((self.stage, "prefill", bucket, self.length), step, use_graphs=True)[:rows]
