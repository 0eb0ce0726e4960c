"""Bark's transformer blocks as the static and the continuous decoders both run them: the loaded
`BarkCausalModel` weights referenced in place (no new checkpoint format), and the block math they share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from transformers.models.bark.modeling_bark import BarkCausalModel


# -- weights ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LayerWeights:
    """One `BarkBlock`'s tensors, referenced (not copied) from the loaded module."""

    norm_1: tuple[torch.Tensor, torch.Tensor | None]
    att_proj: tuple[torch.Tensor, torch.Tensor | None]
    out_proj: tuple[torch.Tensor, torch.Tensor | None]
    norm_2: tuple[torch.Tensor, torch.Tensor | None]
    mlp_in: tuple[torch.Tensor, torch.Tensor | None]
    mlp_out: tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class _StageWeights:
    """The tensors and shapes of one `BarkCausalModel` (the semantic or the coarse model)."""

    token_embedding: torch.Tensor
    position_embedding: torch.Tensor
    layers: tuple[_LayerWeights, ...]
    final_norm: tuple[torch.Tensor, torch.Tensor | None]
    lm_head: torch.Tensor
    num_heads: int
    head_dim: int
    hidden_size: int
    norm_eps: float
    gelu_approximate: str

    @classmethod
    def of(cls, causal_model: BarkCausalModel) -> _StageWeights:
        model = cast(Any, causal_model)  # nn.Module attribute access is untyped

        def pair(module: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
            return module.weight, module.bias

        layers = tuple(
            _LayerWeights(
                norm_1=pair(block.layernorm_1),
                att_proj=pair(block.attn.att_proj),
                out_proj=pair(block.attn.out_proj),
                norm_2=pair(block.layernorm_2),
                mlp_in=pair(block.mlp.in_proj),
                mlp_out=pair(block.mlp.out_proj),
            )
            for block in model.layers
        )
        first = model.layers[0]
        return cls(
            token_embedding=model.input_embeds_layer.weight,
            position_embedding=model.position_embeds_layer.weight,
            layers=layers,
            final_norm=pair(model.layernorm_final),
            lm_head=model.lm_head.weight,
            num_heads=int(first.attn.num_heads),
            head_dim=int(first.attn.head_dim),
            hidden_size=int(first.attn.embed_dim),
            norm_eps=float(model.layernorm_final.eps),
            gelu_approximate=str(first.mlp.gelu.approximate),
        )


def _norm(x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor | None], eps: float) -> torch.Tensor:
    weight, bias = weights
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def _linear(x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    return F.linear(x, weights[0], weights[1])


def attention_inputs(
    weights: _StageWeights, layer: _LayerWeights, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block's query, key and value, (rows, heads, length, head_dim) each."""
    rows, length, _ = x.shape
    qkv = _linear(_norm(x, layer.norm_1, weights.norm_eps), layer.att_proj)
    shape = (rows, length, weights.num_heads, weights.head_dim)
    query, key, value = (part.view(shape).transpose(1, 2) for part in qkv.split(weights.hidden_size, dim=2))
    return query, key, value


def block_tail(weights: _StageWeights, layer: _LayerWeights, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """The rest of one block after attention: output projection, residual, MLP, residual."""
    rows, _, length, _ = attended.shape
    merged = attended.transpose(1, 2).reshape(rows, length, weights.hidden_size)
    x = x + _linear(merged, layer.out_proj)
    hidden = F.gelu(
        _linear(_norm(x, layer.norm_2, weights.norm_eps), layer.mlp_in), approximate=weights.gelu_approximate
    )
    return x + _linear(hidden, layer.mlp_out)


def head(weights: _StageWeights, x: torch.Tensor) -> torch.Tensor:
    """Final norm and the language-model head: (rows, hidden) -> (rows, vocab) logits."""
    return F.linear(_norm(x, weights.final_norm, weights.norm_eps), weights.lm_head)


#: Stores one layer's new keys or values (rows, heads, 1, head_dim) into its cache view
#: (rows, heads, positions, head_dim) at each row's position.
KeyValueWriter = Callable[[torch.Tensor, torch.Tensor], object]

#: One layer's attention for one new token per row: (layer index, query, key, value), each
#: (rows, heads, 1, head_dim) -> attended (rows, heads, 1, head_dim); it also stores the new key
#: and value in the layer's cache.
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cached_attention(
    weights: _StageWeights,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_len: int,
    mask: torch.Tensor,
    write: KeyValueWriter,
) -> Attend:
    """SDPA over a static cache: `keys`/`values` are (layers, rows, heads, positions, head_dim) views
    of the rows in use; `write` puts each layer's new key and value at the rows' positions (one shared
    position in the batch decoder, one per row in the continuous stepper), and `mask` lets a row see
    keys [0, kv_len) up to its own position."""
    scale = 1.0 / math.sqrt(weights.head_dim)

    def attend(index: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        layer_keys, layer_values = keys[index], values[index]
        write(layer_keys, key)
        write(layer_values, value)
        return F.scaled_dot_product_attention(
            query, layer_keys[:, :, :kv_len], layer_values[:, :, :kv_len], attn_mask=mask, scale=scale
        )

    return attend


def decode_step(weights: _StageWeights, x: torch.Tensor, attend: Attend) -> torch.Tensor:
    """One new token per row (embedded: rows, 1, hidden) through every block; (rows, vocab) logits.

    Static shapes and no host sync (given an `attend` without either), so both decoders can capture
    it in a CUDA graph.
    """
    for index, layer in enumerate(weights.layers):
        query, key, value = attention_inputs(weights, layer, x)
        x = block_tail(weights, layer, x, attend(index, query, key, value))
    return head(weights, x[:, 0])


def prefill_into(
    weights: _StageWeights, embeds: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Run prompts (rows, length, hidden) eagerly, writing K/V positions [0, length) of `keys`/`values`
    (layers, rows, heads, positions, head_dim: views of a cache's rows); return the last logits.

    Both decoders prefill this way: the batch decoder into its first rows, the continuous stepper into
    a row's slots.
    """
    length = embeds.shape[1]
    positions = torch.arange(length, device=embeds.device)
    x = embeds.to(dtype) + F.embedding(positions, weights.position_embedding)[None]
    scale = 1.0 / math.sqrt(weights.head_dim)
    for index, layer in enumerate(weights.layers):
        query, key, value = attention_inputs(weights, layer, x)
        keys[index, :, :, :length] = key
        values[index, :, :, :length] = value
        attended = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)
        x = block_tail(weights, layer, x, attended)
    return head(weights, x[:, -1])
