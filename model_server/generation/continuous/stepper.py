"""How one step runs: every row of a stage advances by one token in one captured graph.

`decoding.StaticBarkDecoder` steps a batch whose rows all sit at one position. Here each row has
its own position (rows join mid-flight, coarse windows have per-row prompt lengths) and its own
state in fixed slots on the device (`slots.StageSlots`), and one step is one function from those
slots to the next: embeddings, Bark's blocks (K/V scattered at each row's position under one
additive mask shared by all layers), the head, Bark's rules and the row's sampling (`rules.py`),
and the write of the next token, position, draw count and status. Nothing in it reads the host,
so per (stage, rows bucket, key-range bucket) it is captured once as a CUDA graph and replayed: one
launch per stage per iteration. On a CPU the same function runs eagerly.

Prompts (a row joining, a coarse window) are prefilled for many rows in one call: on CUDA padded
on the right to the stage's longest prompt and to a rows bucket, so each bucket is one graph; on a
CPU grouped by length (padding would only cost arithmetic there).

Rows occupy cache slots [0, n) of their stage; the semantic and coarse stages can both be active,
so each has its own cache (see `cache_bytes`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import record_function
from transformers import BarkModel

from model_server.generation.bark_blocks import Attend, _StageWeights, cached_attention, decode_step
from model_server.generation.continuous.prefill import PaddedPrefill, prefill_rows
from model_server.generation.continuous.rules import StageRules, choose_and_advance
from model_server.generation.continuous.slots import StageSlots
from model_server.generation.cuda_graphs import GraphCache
from model_server.generation.step_runner import _MIN_DECODE_POSITION, batch_bucket

logger = logging.getLogger(__name__)

#: The name of the region a GPU captures as one graph (benchmarks count the ops outside it).
CAPTURED_REGION = "bark.captured_step"


@dataclass
class StageCache:
    """One stage's weights, K/V cache (layers, slots, heads, positions, head_dim), row slots and rules."""

    name: str
    index: int  # its row in the shared output buffer
    weights: _StageWeights
    keys: torch.Tensor
    values: torch.Tensor
    slots: StageSlots
    rules: StageRules | None = None
    #: The stage's longest prompt (set with its rules); CUDA pads every prefill to it.
    prompt_length: int = 0
    padded: PaddedPrefill | None = None

    @property
    def max_positions(self) -> int:
        return int(self.keys.shape[3])

    @property
    def vocab(self) -> int:
        return int(self.weights.lm_head.shape[0])


class RowStepper:
    """Prefill rows into slots; step all rows of a stage by one token each. One thread only."""

    def __init__(
        self,
        model: BarkModel,
        device: torch.device,
        *,
        max_rows: int,
        use_cuda_graphs: bool = False,
        kv_block: int = 256,
        semantic_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        flash_attn_with_kvcache: Callable[..., torch.Tensor] | None = None,
    ):
        self.device = device
        #: flash-attn's `flash_attn_with_kvcache` when BARK_ATTENTION=flash_attention_2 (else SDPA).
        self.flash_attn_with_kvcache = flash_attn_with_kvcache
        self.dtype = model.semantic.input_embeds_layer.weight.dtype
        self.slots = batch_bucket(max_rows)
        self.kv_block = kv_block
        self.use_cuda_graphs = use_cuda_graphs and device.type == "cuda"
        #: Steps padded to a rows bucket and prompts to a fixed length (capturable) where steps are
        #: launches, graphs or not: replayed and eager steps then run the very same shapes.
        self.pad_rows = device.type == "cuda"
        self.pad_prefills = device.type == "cuda"
        # The batch decoder's cache (idle under this loop) can serve the semantic stage: one cache less.
        self.stages = {
            "semantic": self._cache("semantic", 0, model.semantic, semantic_cache),
            "coarse": self._cache("coarse", 1, model.coarse_acoustics),
        }
        longest = max(stage.max_positions for stage in self.stages.values())
        self._key_positions = torch.arange(longest, device=device)
        #: (stage, slot, token/status): every step writes its rows here; the host copies it out once.
        self.out = torch.zeros(len(self.stages), self.slots, 2, dtype=torch.long, device=device)
        self.graphs = GraphCache(device, describe=_describe)

    def _cache(
        self, name: str, index: int, sub_model: Any, reuse: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> StageCache:
        weights = _StageWeights.of(sub_model)
        shape = (len(weights.layers), self.slots, weights.num_heads, int(sub_model.config.block_size), weights.head_dim)
        if reuse is not None and tuple(reuse[0].shape) == shape and reuse[0].dtype == self.dtype:
            keys, values = reuse
        else:
            keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
            values = torch.zeros(shape, dtype=self.dtype, device=self.device)
        slots = StageSlots.allocate(self.slots, int(weights.lm_head.shape[0]), self.device)
        return StageCache(name=name, index=index, weights=weights, keys=keys, values=values, slots=slots)

    def cache_bytes(self) -> int:
        """Device memory of both stages' K/V caches."""
        return sum(s.keys.numel() * s.keys.element_size() * 2 for s in self.stages.values())

    # -- prefill -------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, stage_name: str, slots: Sequence[int], prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run prompts (each (length, hidden), embedded) into `slots`; their last logits (rows, vocab) float32."""
        stage = self.stages[stage_name]
        if any(slot >= self.slots for slot in slots):
            raise ValueError(f"slots {list(slots)} exceed the {self.slots} cache slots")
        longest = max(int(prompt.shape[0]) for prompt in prompts)
        if longest > stage.max_positions:
            raise ValueError(f"a {stage_name} prompt of {longest} tokens exceeds {stage.max_positions} positions")
        if self.pad_prefills and stage.padded is None and stage.prompt_length:
            graphs = self.graphs if self.use_cuda_graphs else None
            stage.padded = PaddedPrefill(stage.name, stage.prompt_length, graphs)
        padded = stage.padded if longest <= stage.prompt_length else None
        return prefill_rows(stage.weights, stage.keys, stage.values, slots, prompts, self.dtype, padded=padded)

    def move(self, stage_name: str, source: int, target: int, length: int) -> None:
        """Move a row's cache [0, length) and its slot state to another slot (compacting after a row left)."""
        stage = self.stages[stage_name]
        stage.keys[:, target, :, :length] = stage.keys[:, source, :, :length]
        stage.values[:, target, :, :length] = stage.values[:, source, :, :length]
        stage.slots.move(source, target)

    # -- the step ------------------------------------------------------------------------------
    def kv_len(self, stage_name: str, highest_position: int) -> int:
        """Keys to attend over: the highest row position rounded up to a block (few graphs, short reads);
        0 with flash-attn, which reads each row's own length."""
        if self.flash_attn_with_kvcache is not None:
            return 0
        stage = self.stages[stage_name]
        return min(stage.max_positions, -(-(highest_position + 1) // self.kv_block) * self.kv_block)

    def bucket(self, rows: int) -> int:
        """Rows a step runs: padded to a power of two on CUDA (few graphs) or with graphs forced on."""
        return batch_bucket(rows) if self.pad_rows or self.use_cuda_graphs else rows

    @torch.inference_mode()
    def step(self, stage_name: str, rows: int, highest_position: int) -> None:
        """Advance slots [0, rows) of a stage by one token; results land in `self.out[stage]`.

        Padding rows (a bucket past `rows`) are free slots: inactive, so the step leaves their state
        alone; their K/V writes land in slots that any later prefill overwrites.
        """
        stage = self.stages[stage_name]
        bucket, kv_len = self.bucket(rows), self.kv_len(stage_name, highest_position)
        self.graphs.run(
            (stage.name, bucket, kv_len),
            lambda: self._step(stage, bucket, kv_len),
            self.use_cuda_graphs,
            preserve=lambda: stage.slots.snapshot(bucket),
        )

    def _step(self, stage: StageCache, rows: int, kv_len: int) -> torch.Tensor:
        """Static shapes, no host sync: graph-capturable. Reads and advances stage.slots[:rows]."""
        with record_function(CAPTURED_REGION):
            state = stage.slots.rows(rows)
            logits = self.forward(stage, state.tokens, state.positions, kv_len)
            assert stage.rules is not None, "the row engine sets each stage's rules"
            out = self.out[stage.index, :rows]
            choose_and_advance(logits, state, stage.rules, out)
            return out

    def forward(self, stage: StageCache, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Logits (rows, vocab) of feeding `tokens` at `positions` (each row its own)."""
        rows = int(tokens.shape[0])
        weights = stage.weights
        x = F.embedding(tokens, weights.token_embedding) + F.embedding(positions, weights.position_embedding)
        x = x.unsqueeze(1)
        keys, values = stage.keys[:, :rows], stage.values[:, :rows]
        if self.flash_attn_with_kvcache is not None:
            return decode_step(weights, x, self._flash_attention(weights, keys, values, positions))
        # One additive mask per step, shared by all layers (a boolean mask is converted in every layer).
        visible = self._key_positions[None, :kv_len] <= positions[:, None]
        mask = torch.zeros(visible.shape, dtype=x.dtype, device=self.device).masked_fill_(~visible, -float("inf"))
        mask = mask.view(rows, 1, 1, kv_len)
        where = positions.view(rows, 1, 1, 1).expand(rows, weights.num_heads, 1, weights.head_dim)
        write = lambda cache, new: cache.scatter_(2, where, new)  # noqa: E731
        return decode_step(weights, x, cached_attention(weights, keys, values, kv_len, mask, write))

    def _flash_attention(
        self, weights: _StageWeights, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor
    ) -> Attend:
        """flash-attn's kernel for decoding with a K/V cache and per-row lengths: it writes each row's
        new key and value at its own position and attends over exactly [0, position], so no mask and
        no key-range buckets (one graph per rows bucket). Our cache (rows, heads, positions, head_dim)
        is its (batch, seqlen, heads, head_dim) transposed: only the last dimension must be contiguous."""
        kernel = self.flash_attn_with_kvcache
        assert kernel is not None
        lengths = positions.to(torch.int32)
        scale = 1.0 / math.sqrt(weights.head_dim)

        def attend(index: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            attended = kernel(
                query.transpose(1, 2),
                keys[index].transpose(1, 2),
                values[index].transpose(1, 2),
                k=key.transpose(1, 2),
                v=value.transpose(1, 2),
                cache_seqlens=lengths,
                softmax_scale=scale,
                causal=True,
            )
            return attended.transpose(1, 2)

        return attend

    # -- CUDA graphs ---------------------------------------------------------------------------
    @torch.inference_mode()
    def capture_graphs(self, max_rows: int | None = None) -> int:
        """Capture every step (stage, rows bucket, key-range bucket) and every padded prefill (stage,
        rows bucket) at warm-up, so no request pays for a capture; returns how many graphs exist.

        The slots are all inactive during capture, so the warm-up runs change no row's state; the
        prefills write K/V into free slots, which a row's own prefill overwrites.
        """
        if not self.use_cuda_graphs:
            return 0
        top = batch_bucket(min(max_rows or self.slots, self.slots))
        buckets = [1 << n for n in range(top.bit_length())]
        for stage in self.stages.values():
            stage.slots.free_all()
            positions = range(_MIN_DECODE_POSITION, stage.max_positions)
            kv_lens = sorted({self.kv_len(stage.name, position) for position in positions})  # [0] with flash
            for rows in reversed(buckets):  # largest first: smaller graphs reuse the pool's blocks
                for kv_len in kv_lens:
                    self.graphs.get((stage.name, rows, kv_len), functools.partial(self._step, stage, rows, kv_len))
            if self.pad_prefills and stage.prompt_length:
                blank = torch.zeros(
                    stage.prompt_length, stage.weights.hidden_size, dtype=self.dtype, device=self.device
                )
                for rows in reversed(buckets):
                    self.prefill(stage.name, list(range(rows)), [blank] * rows)
        return len(self.graphs)


def _describe(key: Any) -> str:
    if len(key) == 3:
        stage, rows, kv_len = key
        return f"the {stage} step at {rows} rows over {kv_len} keys"
    stage, _, rows, length = key
    return f"the {stage} prefill of {rows} rows of {length} tokens"
