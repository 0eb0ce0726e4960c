"""The size of the static decoder's K/V cache, checked against free device memory before it exists.

Why: the static decoder (decoding.py) preallocates keys and values of shape (layers, rows, heads,
block_size, head_dim) for `batch_bucket(max_batch_size)` rows, once per distinct stage shape
(semantic and coarse share one when their shapes match, as in every Bark checkpoint). That size
grows linearly with `max_batch_size`, which accepts up to 512: for bark (24 layers, 16 heads,
1024 positions, head_dim 64) in fp16 it is 100.7 MB per row, 25.8 GB at 256 rows. Allocated
blindly, a setting that cannot fit fails with an allocator error deep in start-up, or fits only
by leaving no memory for the batches themselves. So the size is computed first (a pure function,
tested on CPU) and a cache that does not fit stops the start with the numbers and the largest
`max_batch_size` that would fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

#: Share of the device memory free after the weights are loaded that the cache may take. The rest
#: holds the prefill's and fine stage's activations, the codec, and the CUDA graphs' pool; a batch
#: that still runs out of memory is retried in halves (faults.py).
KV_CACHE_MEMORY_FRACTION = 0.8

_GB = 1e9


@dataclass(frozen=True)
class CacheShape:
    """The cache of one stage, without its row count."""

    layers: int
    heads: int
    positions: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> CacheShape:
        """From a Bark sub-model config (`BarkSemanticConfig`, `BarkCoarseConfig`)."""
        heads = int(config.num_heads)
        return cls(int(config.num_layers), heads, int(config.block_size), int(config.hidden_size) // heads)

    def bytes_for(self, rows: int, dtype: torch.dtype) -> int:
        """Keys and values: layers x rows x heads x positions x head_dim x 2 x bytes per element."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return self.layers * rows * self.heads * self.positions * self.head_dim * 2 * itemsize


def cache_rows(max_batch_size: int) -> int:
    """Rows the decoder allocates: `max_batch_size` rounded up to a power of two (its graph buckets)."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    return 1 << (max_batch_size - 1).bit_length()


def kv_cache_bytes(shapes: Iterable[CacheShape], max_batch_size: int, dtype: torch.dtype) -> int:
    """Bytes of the whole cache; stages of equal shape share one, as the decoder allocates them."""
    rows = cache_rows(max_batch_size)
    return sum(shape.bytes_for(rows, dtype) for shape in set(shapes))


def largest_fitting_batch(shapes: Iterable[CacheShape], dtype: torch.dtype, budget_bytes: int) -> int:
    """The largest power-of-two `max_batch_size` whose cache fits in `budget_bytes` (0 if none)."""
    shapes = set(shapes)
    fits = 0
    rows = 1
    while rows <= 512 and kv_cache_bytes(shapes, rows, dtype) <= budget_bytes:
        fits, rows = rows, rows * 2
    return fits


class KVCacheTooLarge(RuntimeError):
    """The cache for the configured `max_batch_size` does not fit: the server must not start."""


def check_kv_cache_fits(
    shapes: Iterable[CacheShape],
    max_batch_size: int,
    dtype: torch.dtype,
    free_bytes: int,
    total_bytes: int,
    fraction: float = KV_CACHE_MEMORY_FRACTION,
) -> int:
    """The cache's size in bytes if it fits in `fraction` of `free_bytes`; else KVCacheTooLarge, with numbers."""
    shapes = set(shapes)
    needed = kv_cache_bytes(shapes, max_batch_size, dtype)
    budget = int(free_bytes * fraction)
    if needed <= budget:
        return needed
    fits = largest_fitting_batch(shapes, dtype, budget)
    advice = (
        f"set BARK_MAX_BATCH_SIZE to at most {fits}"
        if fits
        else "not even one row fits: use a smaller model or dtype, or a larger GPU"
    )
    raise KVCacheTooLarge(
        f"the decoder's K/V cache for max_batch_size={max_batch_size} ({cache_rows(max_batch_size)} rows, "
        f"{str(dtype).removeprefix('torch.')}) needs {needed / _GB:.2f} GB, but only {free_bytes / _GB:.2f} GB of "
        f"the device's {total_bytes / _GB:.2f} GB are free after loading the weights, of which the cache may take "
        f"{fraction:.0%} ({budget / _GB:.2f} GB); {advice}, or use decoder=transformers (no preallocated cache)"
    )


def device_memory(device: torch.device) -> tuple[int, int] | None:
    """(free, total) bytes of a CUDA device; None elsewhere (no check).

    Free is what the driver reports plus what torch's caching allocator holds but does not use:
    after a failed attempt (a capture check under `decoder=auto`) its cache sits there, reusable.
    """
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free) + max(0, int(cached)), int(total)
