"""The step runner of the static decoder: Bark's transformer weights read in place, a static K/V
cache, the prompt prefill, the one-token step and its CUDA graphs.

It knows nothing of Bark's generation rules (prompts, windows, logits processors, when to stop):
those are `decoding.StaticBarkDecoder`'s, built on this runner, as TGI keeps its `Batch` apart from
its model runner. Why a static cache and graphs at all: see `decoding.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from transformers import BarkModel
from transformers.models.bark.modeling_bark import BarkCausalModel

from model_server.generation.bark_blocks import _StageWeights, cached_attention, decode_step, prefill_into
from model_server.generation.cuda_graphs import CapturedStep, GraphCache

logger = logging.getLogger(__name__)

#: Bark's semantic and coarse prompts are 256 tokens + an infer token (+ coarse history) long.
_MIN_DECODE_POSITION = 257


@dataclass(frozen=True)
class _KVCache:
    """Keys and values of every layer: (layers, batch rows, heads, max positions, head_dim)."""

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def max_positions(self) -> int:
        return int(self.keys.shape[3])


@dataclass(frozen=True)
class _Stage:
    name: str
    model: BarkCausalModel
    weights: _StageWeights
    cache: _KVCache


# -- helpers ---------------------------------------------------------------------------------------
def batch_bucket(rows: int) -> int:
    """Round a batch size up to a power of two: few graphs, at most 2x padding."""
    if rows < 1:
        raise ValueError("a batch needs at least one row")
    return 1 << (rows - 1).bit_length()


# -- the runner -----------------------------------------------------------------------------------
class StepRunner:
    """A static K/V cache shared by the semantic and coarse stages, their prefill and their one-token
    step, run eagerly or replayed as CUDA graphs.

    Not thread-safe: like the engine, it is driven by the one worker thread that owns the device.
    """

    def __init__(
        self,
        model: BarkModel,
        device: torch.device | str,
        *,
        use_cuda_graphs: bool = False,
        max_batch_size: int = 64,
        kv_block: int = 256,
        stop_check_interval: int | None = None,
        pad_batches: bool | None = None,
    ):
        self.device = torch.device(device)
        if use_cuda_graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.model = model
        self.dtype = model.semantic.input_embeds_layer.weight.dtype
        self.use_cuda_graphs = use_cuda_graphs
        self.max_batch_size = max_batch_size
        self.max_rows = batch_bucket(max_batch_size)
        self.kv_block = kv_block
        # Graphs need few shapes, so they pad a batch to its power-of-two bucket; run eagerly, the
        # padded rows would only cost time (a third more at batch 3), so by default eager runs don't.
        self.pad_batches = use_cuda_graphs if pad_batches is None else pad_batches
        # Reading "are all rows done?" is a host sync. On CPU it is free; on CUDA checking every few
        # steps keeps the launch queue full, at the price of <= interval-1 steps past the end, which
        # are cut off again (the output is identical).
        self.stop_check_interval = stop_check_interval or (8 if use_cuda_graphs else 1)

        caches: dict[tuple[int, ...], _KVCache] = {}

        def stage(name: str, sub_model: BarkCausalModel) -> _Stage:
            weights = _StageWeights.of(sub_model)
            shape = (
                len(weights.layers),
                self.max_rows,
                weights.num_heads,
                int(sub_model.config.block_size),
                weights.head_dim,
            )
            # Semantic and coarse models share Bark's architecture and never run at the same time,
            # so they share one cache (and halve its memory).
            if shape not in caches:
                caches[shape] = _KVCache(
                    keys=torch.zeros(shape, dtype=self.dtype, device=self.device),
                    values=torch.zeros(shape, dtype=self.dtype, device=self.device),
                )
            return _Stage(name, sub_model, weights, caches[shape])

        self._semantic = stage("semantic", model.semantic)
        self._coarse = stage("coarse", model.coarse_acoustics)
        max_positions = max(self._semantic.cache.max_positions, self._coarse.cache.max_positions)
        # Static inputs of the step: graphs read them from these addresses on every replay.
        self._token = torch.zeros(self.max_rows, dtype=torch.long, device=self.device)
        self._position = torch.zeros((), dtype=torch.long, device=self.device)
        self._key_positions = torch.arange(max_positions, device=self.device)
        # Graphs by (stage, rows, kv_len); a shape whose capture failed runs eagerly, the others replay.
        self.graphs = GraphCache(self.device, describe=_describe)
        self.cache_bytes = sum(cache.keys.nbytes + cache.values.nbytes for cache in caches.values())

    # -- graphs and the step ------------------------------------------------------------------------
    @torch.inference_mode()
    def capture_graphs(self, max_rows: int | None = None, *, strict: bool = False) -> int:
        """Capture every step graph up front (server warm-up), so no request pays for a capture.

        Returns how many graphs exist. Leaves garbage at cache position 0, which every generation
        overwrites in its prefill before reading it. A shape that cannot be captured raises
        DecoderUnavailable when `strict` (decoder=cudagraph was asked for explicitly: the server
        must not start in a mode it was not asked for), else it runs eagerly from then on, counted.
        """
        if not self.use_cuda_graphs:
            return 0
        top = batch_bucket(min(max_rows or self.max_batch_size, self.max_batch_size))
        self._token.zero_()
        self._position.zero_()
        buckets = [1 << n for n in range(top.bit_length())]
        for stage in (self._semantic, self._coarse):
            # Both stages' prompts hold at least 256 tokens + the infer token, so decoding starts at
            # position 257 and the shortest key range is never used.
            positions = range(_MIN_DECODE_POSITION, stage.cache.max_positions)
            kv_lens = sorted({self._kv_len(stage, position) for position in positions})
            # Largest first: later, smaller graphs reuse the shared pool's blocks.
            for rows in reversed(buckets):
                for kv_len in kv_lens:
                    if self._graph_or_eager(stage, rows, kv_len) is None and strict:
                        raise DecoderUnavailable(
                            f"decoder=cudagraph: the {stage.name} step for {rows} rows over {kv_len} keys "
                            "could not be captured (see the warning above)"
                        )
        return len(self.graphs)

    @property
    def eager_shapes(self) -> set[Any]:
        return self.graphs.eager_shapes

    @torch.inference_mode()
    def check_capture(self) -> None:
        """Capture and replay one step; the replay must match the same step run eagerly."""
        stage = self._semantic
        self._token.zero_()
        self._position.fill_(0)
        captured = self.graphs.capture(lambda: self._step(stage, 1, self.kv_block))
        captured.graph.replay()
        replayed = captured.output.float().clone()
        eager = self._step(stage, 1, self.kv_block).float()
        if not torch.allclose(replayed, eager, rtol=1e-2, atol=1e-2):
            raise RuntimeError("a replayed CUDA graph step differs from the same step run eagerly")

    def _prefill(self, stage: _Stage, embeds: torch.Tensor) -> torch.Tensor:
        """Run the prompt (eagerly), fill cache positions [0, length), return the last logits."""
        weights, cache = stage.weights, stage.cache
        rows, length, _ = embeds.shape
        if rows > self.max_rows:
            raise ValueError(f"batch of {rows} exceeds max_batch_size={self.max_batch_size}")
        if length > cache.max_positions:
            raise ValueError(f"a {stage.name} prompt of {length} tokens exceeds {cache.max_positions} positions")
        return prefill_into(weights, embeds, cache.keys[:, :rows], cache.values[:, :rows], self.dtype)

    def _step(self, stage: _Stage, rows: int, kv_len: int) -> torch.Tensor:
        """One token per row at `self._position`: static shapes, no host sync, graph-capturable.

        Reads `self._token[:rows]` and `self._position`, writes K/V at that position, attends over
        keys [0, kv_len) masked to positions <= the current one, returns (rows, vocab) logits.
        """
        weights, cache = stage.weights, stage.cache
        position = self._position.view(1)
        x = F.embedding(self._token[:rows], weights.token_embedding) + F.embedding(position, weights.position_embedding)
        x = x.unsqueeze(1)
        valid = (self._key_positions[:kv_len] <= self._position).view(1, 1, 1, kv_len)
        attend = cached_attention(
            weights,
            cache.keys[:, :rows],
            cache.values[:, :rows],
            kv_len,
            valid,
            lambda layer_cache, new: layer_cache.index_copy_(2, position, new),
        )
        return decode_step(weights, x, attend)

    def _kv_len(self, stage: _Stage, position: int) -> int:
        """Keys to attend over: the position rounded up to a block, so graphs are few but short."""
        return min(stage.cache.max_positions, -(-(position + 1) // self.kv_block) * self.kv_block)

    def _graph_or_eager(self, stage: _Stage, rows: int, kv_len: int) -> CapturedStep | None:
        """The step's graph, captured now if needed; None if this shape runs eagerly (cuda_graphs.py:
        a failed capture turns graphs off for that shape only; out of memory is raised as itself, so
        the batch-splitting path retries the batch in halves)."""
        return self.graphs.get((stage.name, rows, kv_len), lambda: self._step(stage, rows, kv_len))

    def _forward_token(self, stage: _Stage, rows: int, position: int) -> torch.Tensor:
        """Logits for the tokens already in `self._token`, by graph replay or eagerly."""
        bucket = batch_bucket(rows) if self.pad_batches else rows
        kv_len = self._kv_len(stage, position)
        self._position.fill_(position)
        key = (stage.name, bucket, kv_len)
        output = self.graphs.run(key, lambda: self._step(stage, bucket, kv_len), self.use_cuda_graphs)
        return cast(torch.Tensor, output)[:rows]


def _describe(key: Any) -> str:
    stage, rows, kv_len = key
    return f"the {stage} step at {rows} rows over {kv_len} keys"


class DecoderUnavailable(RuntimeError):
    """The decoder asked for cannot run here; with an explicit setting the server must not start."""
