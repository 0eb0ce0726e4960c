"""The decoder's K/V cache is sized before it is allocated, and refused with the numbers if it cannot fit.

Issue #12: `max_batch_size` accepts up to 512 while bark's cache at 256 rows is about 26 GB. The size
is a pure function of the stage configs (checked here at bark-small's and bark's real shapes, from
`tiny.SIZES`, without their weights) and equals what the decoder really allocates (tiny model).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BarkModel
from transformers.models.bark.configuration_bark import BarkCoarseConfig, BarkSemanticConfig

from model_server.generation import decoding, step_runner
from model_server.generation.decoding import StaticBarkDecoder, build_decoder, select_decoder
from model_server.generation.kv_cache import (
    CacheShape,
    KVCacheTooLarge,
    cache_rows,
    check_kv_cache_fits,
    device_memory,
    kv_cache_bytes,
    largest_fitting_batch,
)
from model_server.tiny import SIZES

CPU = torch.device("cpu")
GB = 10**9


def shapes(size: str) -> list[CacheShape]:
    """The semantic and coarse cache shapes of a real checkpoint size (block_size 1024 for both)."""
    return [CacheShape.of(BarkSemanticConfig(**SIZES[size])), CacheShape.of(BarkCoarseConfig(**SIZES[size]))]


def test_shapes_of_the_real_checkpoints() -> None:
    assert set(shapes("small")) == {CacheShape(layers=12, heads=12, positions=1024, head_dim=64)}
    assert set(shapes("large")) == {CacheShape(layers=24, heads=16, positions=1024, head_dim=64)}


@pytest.mark.parametrize(("size", "layers", "heads"), [("small", 12, 12), ("large", 24, 16)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_bytes_are_layers_rows_heads_positions_head_dim_keys_and_values(
    size: str, layers: int, heads: int, dtype: torch.dtype
) -> None:
    itemsize = 2 if dtype == torch.float16 else 4
    for batch, rows in ((1, 1), (3, 4), (32, 32), (200, 256)):
        # Semantic and coarse have the same shape: one shared cache, not two.
        assert kv_cache_bytes(shapes(size), batch, dtype) == layers * rows * heads * 1024 * 64 * 2 * itemsize


def test_bark_at_256_rows_needs_about_26_gb_in_fp16() -> None:
    assert kv_cache_bytes(shapes("large"), 256, torch.float16) / GB == pytest.approx(25.77, abs=0.01)
    assert kv_cache_bytes(shapes("small"), 256, torch.float16) / GB == pytest.approx(9.66, abs=0.01)


def test_stages_of_different_shapes_each_count() -> None:
    small, large = shapes("small")[0], shapes("large")[0]
    assert kv_cache_bytes([small, large], 4, torch.float16) == small.bytes_for(4, torch.float16) + large.bytes_for(
        4, torch.float16
    )


def test_rows_are_the_power_of_two_bucket() -> None:
    assert [cache_rows(batch) for batch in (1, 2, 3, 31, 32, 33, 512)] == [1, 2, 4, 32, 32, 64, 512]
    assert cache_rows(7) == step_runner.batch_bucket(7)
    with pytest.raises(ValueError):
        cache_rows(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("max_batch_size", [1, 3, 8])
def test_the_function_matches_what_the_decoder_allocates(
    tiny_checkpoint: Path, dtype: torch.dtype, max_batch_size: int
) -> None:
    model = BarkModel.from_pretrained(tiny_checkpoint, dtype=dtype).eval()
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=max_batch_size)
    tiny_shapes = [CacheShape.of(model.semantic.config), CacheShape.of(model.coarse_acoustics.config)]
    assert decoder.cache_bytes == kv_cache_bytes(tiny_shapes, max_batch_size, dtype) > 0


def test_largest_fitting_batch() -> None:
    per_row = kv_cache_bytes(shapes("large"), 1, torch.float16)
    assert largest_fitting_batch(shapes("large"), torch.float16, 100 * per_row) == 64
    assert largest_fitting_batch(shapes("large"), torch.float16, 128 * per_row) == 128
    assert largest_fitting_batch(shapes("large"), torch.float16, 10**15) == 512  # the setting's own bound
    assert largest_fitting_batch(shapes("large"), torch.float16, per_row - 1) == 0


def test_a_cache_that_does_not_fit_is_refused_with_the_numbers() -> None:
    """bark, 256 rows, on a GPU with 20 of 80 GB free: 25.8 GB does not fit in 80 % of 20 GB."""
    with pytest.raises(KVCacheTooLarge) as refused:
        check_kv_cache_fits(shapes("large"), 256, torch.float16, free_bytes=20 * GB, total_bytes=80 * GB)
    message = str(refused.value)
    for figure in ("max_batch_size=256", "256 rows", "float16", "25.77 GB", "20.00 GB", "80.00 GB", "16.00 GB"):
        assert figure in message, figure
    assert "BARK_MAX_BATCH_SIZE to at most 128" in message  # 12.9 GB fits in 16 GB
    # Within the budget it passes and says how much it takes.
    fits = check_kv_cache_fits(shapes("large"), 128, torch.float16, free_bytes=20 * GB, total_bytes=80 * GB)
    assert fits == kv_cache_bytes(shapes("large"), 128, torch.float16)


def test_when_not_even_one_row_fits_the_message_says_so() -> None:
    with pytest.raises(KVCacheTooLarge, match="not even one row fits"):
        check_kv_cache_fits(shapes("large"), 1, torch.float32, free_bytes=10**8, total_bytes=10**9)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> BarkModel:
    return BarkModel.from_pretrained(tiny_checkpoint).eval()


@pytest.mark.parametrize("setting", ["static", "auto"])
def test_building_a_decoder_checks_the_cache_against_free_device_memory(
    model: BarkModel, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """As on a GPU with too little free memory: the start stops, under auto too (never a fallback)."""
    tiny_shapes = [CacheShape.of(model.semantic.config), CacheShape.of(model.coarse_acoustics.config)]
    needed = kv_cache_bytes(tiny_shapes, 64, torch.float32)
    reported: list[torch.device] = []

    def device_memory(device: torch.device) -> tuple[int, int]:
        reported.append(device)
        return needed, 4 * needed  # free = exactly the cache: over the 80 % share

    monkeypatch.setattr(decoding, "device_memory", device_memory)
    with pytest.raises(KVCacheTooLarge, match="at most 32"):
        select_decoder(model, setting, CPU, max_batch_size=64)
    assert reported == [CPU]
    assert isinstance(build_decoder(model, "static", CPU, max_batch_size=32), StaticBarkDecoder)
    assert build_decoder(model, "transformers", CPU, max_batch_size=512) is None  # no preallocated cache


def test_memory_torch_holds_but_does_not_use_counts_as_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed cudagraph check under auto, that attempt's cache sits in torch's allocator,
    invisible to the driver's free figure; the static fallback can reuse it, so it counts."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * GB, 80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 30 * GB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 8 * GB)
    assert device_memory(torch.device("cuda")) == (32 * GB, 80 * GB)
    assert device_memory(CPU) is None
