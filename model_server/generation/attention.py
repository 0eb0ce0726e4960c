"""Scaled-dot-product attention (SDPA) for Bark.

transformers ships Bark with eager and flash-attention-2 attention only. Eager attention builds the
full score matrix in several kernels; `torch.nn.functional.scaled_dot_product_attention` fuses them
(flash / memory-efficient kernels on GPU, a fused path on CPU). The weights and the maths are the
same, so we load the model with eager attention and switch its attention modules' class in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from transformers.models.bark.modeling_bark import BarkSelfAttention


class BarkSdpaAttention(BarkSelfAttention):
    """BarkSelfAttention whose score/softmax/weighted-sum runs as one SDPA call."""

    def _attn(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any = None
    ) -> tuple[torch.Tensor, None]:
        query_length, key_length = query.size(-2), key.size(-2)
        mask = attention_mask
        use_causal_flag = False
        if self.is_causal:
            if mask is None and query_length == key_length:
                use_causal_flag = True  # lets SDPA pick its fastest causal kernel
            elif query_length > 1:
                # Bottom-right aligned causal mask, as eager attention slices it from `self.bias`.
                causal = self.bias[:, :, key_length - query_length : key_length, :key_length]
                if mask is None:
                    mask = causal
                elif mask.dtype == torch.bool:
                    mask = mask & causal
                else:
                    mask = mask.masked_fill(~causal, torch.finfo(mask.dtype).min)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(query.dtype)
        output = nn.functional.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=use_causal_flag,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        return output, None


def use_sdpa_attention(model: nn.Module) -> int:
    """Switch every eager Bark attention module in `model` to SDPA; returns how many."""
    switched = 0
    for module in model.modules():
        if type(module) is BarkSelfAttention:
            module.__class__ = BarkSdpaAttention
            switched += 1
    return switched


def flash_decode_kernel(attention: str, device: torch.device, dtype: torch.dtype) -> Callable[..., torch.Tensor] | None:
    """flash-attn's `flash_attn_with_kvcache` for the continuous decoding step, where it pays: asked
    for (attention=flash_attention_2, which engine.choose_attention only allows with CUDA and the
    package), in half precision (its kernels take fp16/bf16 only). Otherwise None: the step uses SDPA,
    which picks torch's own fused kernels. The GPU check times both."""
    if attention != "flash_attention_2" or device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return None
    from flash_attn import flash_attn_with_kvcache  # an optional dependency ('.[gpu]')

    return cast(Callable[..., torch.Tensor], flash_attn_with_kvcache)
