"""How one step runs: a decoding step over rows at different positions, on a per-stage static cache.

`decoding.StaticBarkDecoder` steps a batch whose rows all sit at the same position. Here each row
has its own position (rows join mid-flight, coarse windows have per-row prompt lengths), so the
step takes a (rows,) position tensor: K/V are scattered at each row's position and the attention
mask (keys <= own position) is built once per step as an additive mask shared by every layer.
Shapes stay static per (stage, rows bucket, key-range bucket), so on CUDA each is captured once as a
graph at warm-up and replayed; on CPU the very same function runs eagerly.

Rows occupy cache slots [0, n) of their stage; the semantic and coarse stages can both be active,
so each has its own cache (2x the memory of the batch decoder's shared one; see `cache_bytes`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BarkModel

from model_server.generation.bark_blocks import _StageWeights, decode_step, prefill_into
from model_server.generation.step_runner import _MIN_DECODE_POSITION, batch_bucket, capture_graph

logger = logging.getLogger(__name__)


@dataclass
class StageCache:
    """One stage's weights, K/V cache (layers, slots, heads, positions, head_dim) and static step inputs."""

    name: str
    weights: _StageWeights
    keys: torch.Tensor
    values: torch.Tensor
    tokens: torch.Tensor  # (slots,) long: the token each row feeds at this step
    positions: torch.Tensor  # (slots,) long: where each row writes it

    @property
    def max_positions(self) -> int:
        return int(self.keys.shape[3])

    @property
    def vocab(self) -> int:
        return int(self.weights.lm_head.shape[0])


@dataclass(frozen=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor


class RowStepper:
    """Prefill rows into slots, step all rows of a stage by one token each. One thread only."""

    def __init__(
        self,
        model: BarkModel,
        device: torch.device,
        *,
        max_rows: int,
        use_cuda_graphs: bool = False,
        kv_block: int = 256,
        semantic_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.device = device
        self.dtype = model.semantic.input_embeds_layer.weight.dtype
        self.slots = batch_bucket(max_rows)
        self.kv_block = kv_block
        self.use_cuda_graphs = use_cuda_graphs and device.type == "cuda"
        # The batch decoder's cache (idle under this loop) can serve the semantic stage: one cache less.
        self.stages = {
            "semantic": self._cache("semantic", model.semantic, semantic_cache),
            "coarse": self._cache("coarse", model.coarse_acoustics),
        }
        longest = max(stage.max_positions for stage in self.stages.values())
        self._key_positions = torch.arange(longest, device=device)
        self._graphs: dict[tuple[str, int, int], _Graph] = {}
        self._pool: Any = None

    def _cache(self, name: str, sub_model: Any, reuse: tuple[torch.Tensor, torch.Tensor] | None = None) -> StageCache:
        weights = _StageWeights.of(sub_model)
        shape = (len(weights.layers), self.slots, weights.num_heads, int(sub_model.config.block_size), weights.head_dim)
        if reuse is not None and tuple(reuse[0].shape) == shape and reuse[0].dtype == self.dtype:
            keys, values = reuse
        else:
            keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
            values = torch.zeros(shape, dtype=self.dtype, device=self.device)
        return StageCache(
            name=name,
            weights=weights,
            keys=keys,
            values=values,
            tokens=torch.zeros(self.slots, dtype=torch.long, device=self.device),
            positions=torch.zeros(self.slots, dtype=torch.long, device=self.device),
        )

    def cache_bytes(self) -> int:
        """Device memory of both stages' K/V caches."""
        return sum(s.keys.numel() * s.keys.element_size() * 2 for s in self.stages.values())

    # -- prefill -------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, stage_name: str, first_slot: int, embeds: torch.Tensor) -> torch.Tensor:
        """Run prompts (rows, length, hidden) eagerly into slots [first_slot, +rows); last logits (rows, vocab)."""
        stage = self.stages[stage_name]
        weights = stage.weights
        rows, length, _ = embeds.shape
        if first_slot + rows > self.slots:
            raise ValueError(f"{rows} rows at slot {first_slot} exceed the {self.slots} cache slots")
        if length > stage.max_positions:
            raise ValueError(f"a {stage_name} prompt of {length} tokens exceeds {stage.max_positions} positions")
        end = first_slot + rows
        return prefill_into(weights, embeds, stage.keys[:, first_slot:end], stage.values[:, first_slot:end], self.dtype)

    def move(self, stage_name: str, source: int, target: int, length: int) -> None:
        """Copy a row's cache [0, length) from one slot to another (compacting after a row left)."""
        stage = self.stages[stage_name]
        stage.keys[:, target, :, :length] = stage.keys[:, source, :, :length]
        stage.values[:, target, :, :length] = stage.values[:, source, :, :length]

    # -- the step ------------------------------------------------------------------------------
    def kv_len(self, stage_name: str, highest_position: int) -> int:
        """Keys to attend over: the highest row position rounded up to a block (few graphs, short reads)."""
        stage = self.stages[stage_name]
        return min(stage.max_positions, -(-(highest_position + 1) // self.kv_block) * self.kv_block)

    @torch.inference_mode()
    def step(self, stage_name: str, tokens: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """Feed tokens[i] at positions[i] for slots [0, rows); logits (rows, vocab).

        Rows are padded to their power-of-two bucket only when replaying graphs (padding rows sit
        at position 0 of free slots, which any later prefill overwrites).
        """
        stage = self.stages[stage_name]
        rows = len(positions)
        kv_len = self.kv_len(stage_name, max(positions))
        bucket = batch_bucket(rows) if self.use_cuda_graphs else rows
        stage.tokens[:rows].copy_(tokens)
        stage.positions[:rows].copy_(torch.tensor(positions, dtype=torch.long), non_blocking=True)
        if bucket > rows:
            stage.tokens[rows:bucket].zero_()
            stage.positions[rows:bucket].zero_()
        if self.use_cuda_graphs:
            try:
                graph = self._graph_for(stage, bucket, kv_len)
            except Exception as error:  # a capture failure: stay correct, just slower
                logger.warning("CUDA graph capture failed, stepping rows eagerly from now on: %r", error)
                self.use_cuda_graphs = False
            else:
                graph.graph.replay()
                return graph.logits[:rows]
        return self._step(stage, bucket, kv_len)[:rows]

    def _step(self, stage: StageCache, rows: int, kv_len: int) -> torch.Tensor:
        """Static shapes, no host sync: graph-capturable. Reads stage.tokens/positions[:rows]."""
        weights = stage.weights
        positions = stage.positions[:rows]
        x = F.embedding(stage.tokens[:rows], weights.token_embedding) + F.embedding(
            positions, weights.position_embedding
        )
        x = x.unsqueeze(1)
        # One additive mask per step, shared by all layers (a boolean mask is converted in every layer).
        visible = self._key_positions[None, :kv_len] <= positions[:, None]
        mask = torch.zeros(visible.shape, dtype=x.dtype, device=self.device).masked_fill_(~visible, -float("inf"))
        mask = mask.view(rows, 1, 1, kv_len)
        where = positions.view(rows, 1, 1, 1).expand(rows, weights.num_heads, 1, weights.head_dim)
        return decode_step(
            weights,
            stage.keys[:, :rows],
            stage.values[:, :rows],
            x,
            kv_len,
            mask,
            lambda cache, new: cache.scatter_(2, where, new),
        )

    # -- CUDA graphs ---------------------------------------------------------------------------
    @torch.inference_mode()
    def capture_graphs(self, max_rows: int | None = None) -> int:
        """Capture every (stage, rows bucket, key-range bucket) step at warm-up; returns how many exist."""
        if not self.use_cuda_graphs:
            return 0
        top = batch_bucket(min(max_rows or self.slots, self.slots))
        buckets = [1 << n for n in range(top.bit_length())]
        for stage in self.stages.values():
            stage.tokens.zero_()
            stage.positions.zero_()
            positions = range(_MIN_DECODE_POSITION, stage.max_positions)
            kv_lens = sorted({self.kv_len(stage.name, position) for position in positions})
            for rows in reversed(buckets):  # largest first: smaller graphs reuse the pool's blocks
                for kv_len in kv_lens:
                    self._graph_for(stage, rows, kv_len)
        return len(self._graphs)

    def _graph_for(self, stage: StageCache, rows: int, kv_len: int) -> _Graph:
        key = (stage.name, rows, kv_len)
        if key not in self._graphs:
            self._graphs[key] = self._capture(lambda: self._step(stage, rows, kv_len))
        return self._graphs[key]

    def _capture(self, step: Callable[[], torch.Tensor]) -> _Graph:
        """As decoding.StaticBarkDecoder._capture: warm up on a side stream, then capture into one pool.

        Sharing the pool is safe: each replay's logits are consumed (copied to float32) before any
        other graph replays.
        """
        started = time.perf_counter()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph, logits = capture_graph(step, self.device, self._pool)
        logger.debug("captured a row step graph in %.1f ms", (time.perf_counter() - started) * 1e3)
        return _Graph(graph, logits)
