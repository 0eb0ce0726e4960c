"""The step runner of the static decoder: Bark's transformer weights read in place, a static K/V
cache, the prompt prefill, the one-token step and its CUDA graphs.

It knows nothing of Bark's generation rules (prompts, windows, logits processors, when to stop):
those are `decoding.StaticBarkDecoder`'s, built on this runner, as TGI keeps its `Batch` apart from
its model runner. Why a static cache and graphs at all: see `decoding.py`.
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
from transformers.models.bark.modeling_bark import BarkCausalModel

from model_server import metrics
from model_server.generation.bark_blocks import _StageWeights, decode_step, prefill_into
from model_server.generation.faults import OUT_OF_MEMORY

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


@dataclass(frozen=True)
class _CapturedStep:
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor  # the graph's static output, overwritten by every replay


# -- helpers ---------------------------------------------------------------------------------------
def batch_bucket(rows: int) -> int:
    """Round a batch size up to a power of two: few graphs, at most 2x padding."""
    if rows < 1:
        raise ValueError("a batch needs at least one row")
    return 1 << (rows - 1).bit_length()


def capture_graph(step: Callable[[], torch.Tensor], device: torch.device, pool: Any) -> tuple[Any, torch.Tensor]:
    """Capture `step` into `pool` after two warm-up runs on a side stream (lazy initialisation must
    not be captured); returns the graph and its static output."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        logits = step()
    return graph, logits


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
        self._graphs: dict[tuple[str, int, int], _CapturedStep] = {}
        self._graph_pool: Any = None
        # (stage, rows, kv_len) whose capture failed: those steps run eagerly, every other shape replays.
        self.eager_shapes: set[tuple[str, int, int]] = set()
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
        return len(self._graphs)

    @torch.inference_mode()
    def check_capture(self) -> None:
        """Capture and replay one step; the replay must match the same step run eagerly."""
        stage = self._semantic
        self._token.zero_()
        self._position.fill_(0)
        captured = self._graph_for(stage, 1, self.kv_block)
        captured.graph.replay()
        replayed = captured.logits.float().clone()
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
        return decode_step(
            weights,
            cache.keys[:, :rows],
            cache.values[:, :rows],
            x,
            kv_len,
            valid,
            lambda layer_cache, new: layer_cache.index_copy_(2, position, new),
        )

    def _kv_len(self, stage: _Stage, position: int) -> int:
        """Keys to attend over: the position rounded up to a block, so graphs are few but short."""
        return min(stage.cache.max_positions, -(-(position + 1) // self.kv_block) * self.kv_block)

    def _graph_for(self, stage: _Stage, rows: int, kv_len: int) -> _CapturedStep:
        key = (stage.name, rows, kv_len)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(lambda: self._step(stage, rows, kv_len))
            self._graphs[key] = captured
        return captured

    def _capture(self, step: Callable[[], torch.Tensor]) -> _CapturedStep:
        """Capture `step` after a warm-up on a side stream (lazy initialisation must not be captured).

        All graphs share one memory pool. That is safe here because every replay's logits are
        consumed (copied to float32 by the sampler) before any other graph replays, and nothing
        else lives in the pool: the cache and the static inputs are ordinary allocations.
        The warm-up runs write the same K/V at the current position as the replay that follows.
        """
        started = time.perf_counter()
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph, logits = capture_graph(step, self.device, self._graph_pool)
        logger.debug("captured a decoding step graph in %.1f ms", (time.perf_counter() - started) * 1e3)
        return _CapturedStep(graph, logits)

    def _graph_or_eager(self, stage: _Stage, rows: int, kv_len: int) -> _CapturedStep | None:
        """The step's graph, captured now if needed; None if this shape runs eagerly.

        A failed capture (an op that cannot be captured, a driver or allocator error) turns graphs
        off for this one shape only, with a warning and `bark_decoder_fallbacks_total{reason=
        "capture_failed"}`. Out-of-memory is not a capture problem: it is raised as itself, so the
        batch-splitting path (faults.py) retries the batch in halves as for any other OOM.
        """
        key = (stage.name, rows, kv_len)
        if key in self.eager_shapes:
            return None
        try:
            return self._graph_for(stage, rows, kv_len)
        except Exception as error:
            out_of_memory = _out_of_memory_in(error)
            if out_of_memory is None:
                self._capture_failed(key, error)
                return None
        # Raised outside the `except`, so Python does not chain it to (and cut it from) the wrapper.
        raise out_of_memory

    def _capture_failed(self, key: tuple[str, int, int], error: Exception) -> None:
        """Run this shape eagerly from now on; say so in the log and in the metrics."""
        self.eager_shapes.add(key)
        metrics.DECODER_FALLBACKS.labels(reason="capture_failed").inc()
        stage_name, rows, kv_len = key
        logger.warning(
            "CUDA graph capture failed for the %s step at %d rows over %d keys; that shape runs eagerly "
            "from now on, the others keep their graphs: %r",
            stage_name,
            rows,
            kv_len,
            error,
        )

    def _forward_token(self, stage: _Stage, rows: int, position: int) -> torch.Tensor:
        """Logits for the tokens already in `self._token`, by graph replay or eagerly."""
        bucket = batch_bucket(rows) if self.pad_batches else rows
        kv_len = self._kv_len(stage, position)
        self._position.fill_(position)
        if self.use_cuda_graphs:
            captured = self._graph_or_eager(stage, bucket, kv_len)
            if captured is not None:
                captured.graph.replay()
                return captured.logits[:rows]
        return self._step(stage, bucket, kv_len)[:rows]


def _out_of_memory_in(error: BaseException) -> BaseException | None:
    """The out-of-memory error behind `error`, if any: a capture that fails inside `torch.cuda.graph`
    surfaces as the error of ending the capture, with the original one as its context."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OUT_OF_MEMORY):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class DecoderUnavailable(RuntimeError):
    """The decoder asked for cannot run here; with an explicit setting the server must not start."""
