"""Per-row logits processing and sampling: one batched call, each row with its own settings and seed.

Why not `LogitsProcessorList` + `torch.multinomial`: transformers' processors take one temperature
for the whole batch and `multinomial` draws from one global random stream, so a row's tokens would
depend on its batch mates. Here every row carries its own temperature, greedy/sample flag and seed,
and the noise is *counter-based*: the uniform draw for (seed, draw number, token id) is an integer
hash, the same on CPU and CUDA and whatever else shares the batch. Sampling is Gumbel-max
(`argmax(log p + G)` with `G = -log(-log U)`), which draws exactly from softmax(p) and stays a
fixed-shape, capturable tensor program (no `multinomial`, no host sync). The row's key for a draw
is hashed on the host (seeds and counters live there); only the top-k candidates get noise.

The rules are Bark's, in transformers' order (checked against `_get_logits_processor` in
tests/test_continuous_rows.py): semantic = suppress non-semantic tokens, EOS prioritiser
(`min_eos_p`), then temperature and top-k 50 when sampling; coarse = the alternating-codebook rule
(per row: its own step parity in its own window), then temperature and top-k. transformers'
trailing `LogitNormalization` (a log-softmax) changes neither argmax nor the sampled distribution.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
#: A 32-bit integer hash constant (Thomas Mueller's); small enough that x * C never overflows int64.
_MIX = 0x45D9F3B
_GOLDEN = 0x9E3779B9


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit avalanche hash on int64 tensors holding values in [0, 2**32)."""
    x = ((x ^ (x >> 16)) * _MIX) & _MASK32
    x = ((x ^ (x >> 16)) * _MIX) & _MASK32
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    """`_mix32` on a Python int: row keys are computed on the host, where seeds and counters live."""
    x = ((x ^ (x >> 16)) * _MIX) & _MASK32
    x = ((x ^ (x >> 16)) * _MIX) & _MASK32
    return x ^ (x >> 16)


def fold_seed(seed: int) -> int:
    """Any Python int -> 32 bits (requests may send 64-bit seeds)."""
    seed &= (1 << 64) - 1
    return (seed ^ (seed >> 32)) & _MASK32


def row_key(seed: int, draw: int) -> int:
    """The key of one row's one draw: a hash of (seed, draw number)."""
    return _mix32_int(seed ^ _mix32_int((draw * _GOLDEN + 1) & _MASK32))


def row_keys(seeds: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """`row_key` for every row on the device (int64 tensors): the same integers, no host round trip."""
    return _mix32(seeds ^ _mix32((draws * _GOLDEN + 1) & _MASK32))


def uniform_noise(keys: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """U(0, 1) float32 shaped like `token_ids` (rows, n): a pure function of (row key, token id).

    Noise depends on the token id, not its position, so drawing it for the top-k candidates only
    gives exactly what drawing it for the whole vocabulary would (the rest are -inf anyway).
    """
    # ids * odd constant mod 2**32 is a bijection, so distinct tokens stay distinct before the mix.
    bits = _mix32(keys[:, None] ^ ((token_ids * _GOLDEN) & _MASK32))
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def semantic_scores(logits: torch.Tensor, suppressed: torch.Tensor, eos: int, min_eos_p: float | None) -> torch.Tensor:
    """Bark's semantic rules on logits (rows, vocab) -> float32; `suppressed` is a (vocab,) bool mask."""
    scores = logits.float().masked_fill(suppressed, -float("inf"))
    if min_eos_p:
        eos_probability = torch.softmax(scores, dim=-1)[:, eos : eos + 1]
        only_eos = torch.full_like(scores, -float("inf"))
        only_eos[:, eos] = scores[:, eos]
        scores = torch.where(eos_probability > min_eos_p, only_eos, scores)
    return scores


def coarse_scores(logits: torch.Tensor, parity: torch.Tensor, semantic_vocab: int, codebook: int) -> torch.Tensor:
    """The alternating-codebook rule per row (`parity` 0: first codebook, 1: second) -> float32.

    As `AlternatingCodebooksLogitsProcessor`: the first codebook allows [sv, sv + cb), the second
    everything from sv + cb on.
    """
    ids = torch.arange(logits.shape[-1], device=logits.device)
    low = semantic_vocab + parity[:, None] * codebook
    high = torch.where(parity[:, None] == 0, low + codebook, torch.full_like(low, logits.shape[-1]))
    allowed = (ids[None, :] >= low) & (ids[None, :] < high)
    return logits.float().masked_fill(~allowed, -float("inf"))


def choose_on_device(
    scores: torch.Tensor, do_sample: torch.Tensor, temperature: torch.Tensor, keys: torch.Tensor, top_k: int
) -> torch.Tensor:
    """Greedy rows: argmax. Sampled rows: temperature, top-k, Gumbel-max with the row's own noise, as a
    fixed-shape tensor program (no host branch): the captured step's sampler.

    Gumbel-max over the k candidates (`argmax(s_i / T + G_i)`) draws from softmax over the top-k,
    as `TopKLogitsWarper` + `multinomial` do; the noise of a candidate is a function of its token id.
    Temperature is 1.0 where greedy, so the division is harmless there.
    """
    greedy = torch.argmax(scores, dim=-1)
    values, candidates = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1)
    gumbel = -torch.log(-torch.log(uniform_noise(keys, candidates)))
    picked = torch.argmax(values / temperature[:, None] + gumbel, dim=-1, keepdim=True)
    sampled = candidates.gather(-1, picked).squeeze(-1)
    return torch.where(do_sample, sampled, greedy)
