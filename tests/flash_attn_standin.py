"""A stand-in `flash_attn` package, so the flash-attention-2 load path can be tested on a CPU.

Why: flash-attn only builds for CUDA, yet whether the server *starts* with it installed is decided
by transformers' checks at load time (issue #12: Encodec refused `flash_attention_2`, so the `[gpu]`
image crash-looped). `install(folder)` writes a package `flash_attn` plus the `dist-info` metadata
transformers reads (`importlib.metadata` version and the `flash_attn -> flash-attn` distribution
mapping of `is_flash_attn_2_available`). Its functions compute the same attention with SDPA and
count their calls, so a test can also see *which* stages really run through flash-attn.

`python -m tests.flash_attn_standin FOLDER CHECKPOINT ATTENTION DECODER` loads the engine in a fresh
process with the stand-in importable and CUDA reported as available (transformers' own check
requires it), runs one short batch and prints JSON: the attention of each sub-model and the
stand-in's calls per stage. A fresh process, because transformers decides at import time whether
Bark's flash code path exists (`modeling_bark` imports `_flash_attention_forward` conditionally).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__version__ = "2.8.3"

#: Calls of each stand-in function, by name; `run` reads it per stage.
CALLS: Counter[str] = Counter()


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, causal: bool) -> torch.Tensor:
    """flash-attn's layout (batch, length, heads, head_dim) and bottom-right causal mask, via SDPA."""
    q_len, k_len = q.shape[1], k.shape[1]
    mask = None
    if causal and q_len > 1:
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(), attn_mask=mask, scale=scale
    )
    return out.transpose(1, 2).to(q.dtype)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Any = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> torch.Tensor:
    CALLS["flash_attn_func"] += 1
    return _attention(q, k, v, softmax_scale, causal)


def flash_attn_varlen_func(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Padded batches (varlen) are not needed by the paths tested here; a call must be visible."""
    CALLS["flash_attn_varlen_func"] += 1
    raise NotImplementedError("the flash_attn stand-in has no varlen kernel")


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    cache_seqlens: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    **unsupported: Any,
) -> torch.Tensor:
    """flash-attn's decoding kernel for one new token per row, in its layout ((batch, length, heads,
    head_dim); the caches may be strided views): writes `k`/`v` into the caches at each row's
    `cache_seqlens` and attends over the row's own [0, length]."""
    CALLS["flash_attn_with_kvcache"] += 1
    assert not unsupported and k is not None and v is not None and cache_seqlens is not None
    assert q.shape[1] == 1 and cache_seqlens.dtype == torch.int32 and k_cache.stride(-1) == 1
    batch, _, heads, head_dim = k.shape
    where = cache_seqlens.long().view(batch, 1, 1, 1).expand(batch, 1, heads, head_dim)
    k_cache.scatter_(1, where, k)
    v_cache.scatter_(1, where, v)
    visible = torch.arange(k_cache.shape[1], device=q.device)[None, :] <= cache_seqlens.long()[:, None]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k_cache.transpose(1, 2),
        v_cache.transpose(1, 2),
        attn_mask=visible.view(batch, 1, 1, -1),
        scale=softmax_scale,
    )
    return out.transpose(1, 2)


def install(folder: Path) -> Path:
    """Write the importable stand-in into `folder` (put it on sys.path / PYTHONPATH); returns it."""
    package = folder / "flash_attn"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        "from tests.flash_attn_standin import __version__, flash_attn_func, flash_attn_varlen_func"
        ", flash_attn_with_kvcache\n"
    )
    (package / "bert_padding.py").write_text(
        "from transformers.modeling_flash_attention_utils import _pad_input as pad_input\n"
        "from transformers.modeling_flash_attention_utils import _unpad_input as unpad_input\n"
    )
    info = folder / f"flash_attn-{__version__}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: flash-attn\nVersion: {__version__}\n")
    (info / "top_level.txt").write_text("flash_attn\n")
    (info / "RECORD").write_text("flash_attn/__init__.py,,\nflash_attn/bert_padding.py,,\n")
    return folder


def run(checkpoint: str, attention: str, decoder: str) -> dict[str, Any]:
    """Load the engine as the server does (flash-attn importable, CUDA claimed), run one batch."""
    torch.cuda.is_available = lambda: True  # transformers' FA2 check needs CUDA; all tensors stay on the CPU
    from model_server.config import Settings
    from model_server.generation import engine as engine_module

    # The engine's own gate also wants a CUDA device; the device used stays the CPU.
    engine_module.flash_attention_available = lambda device: True  # type: ignore[assignment]
    settings = Settings(
        model_dir=checkpoint, device="cpu", attention=attention, decoder=decoder, semantic_tokens_min=4, warmup=False
    )
    engine = engine_module.BarkEngine(settings)
    model: Any = engine.model
    implementations = {
        name: getattr(model, name).config._attn_implementation
        for name in ("semantic", "coarse_acoustics", "fine_acoustics", "codec_model")
    }
    calls: dict[str, int] = {}
    stages = ("semantic", "coarse", "fine", "codec_decode")

    # Count the stand-in's calls per stage by wrapping the engine's stage clock.
    original_sync = engine._synchronize
    stage_iter = iter(stages)

    def lap() -> None:
        original_sync()
        calls[next(stage_iter)] = sum(CALLS.values())
        CALLS.clear()

    engine._synchronize = lap  # type: ignore[method-assign]
    CALLS.clear()
    output = engine.generate_batch(["Hello there."], None, engine_module.Sampling(do_sample=False), [6])
    return {
        "attention": engine.attention,
        "decoder": engine.decoder_name,
        "implementations": implementations,
        "flash_calls": calls,
        "samples": len(output.waveforms[0]),
    }


def main(argv: list[str]) -> None:
    folder, checkpoint, attention, decoder = argv
    sys.path.insert(0, str(install(Path(folder))))
    print(json.dumps(run(checkpoint, attention, decoder)))


if __name__ == "__main__":
    # Run through the imported module, so that `flash_attn` (which imports it) shares its CALLS.
    from tests.flash_attn_standin import main as imported_main

    imported_main(sys.argv[1:5])
