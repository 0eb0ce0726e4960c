"""SDPA attention gives the same outputs as Bark's eager attention (fp32, tiny checkpoint)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BarkModel

from model_server.generation.attention import BarkSdpaAttention, use_sdpa_attention

ATOL = 1e-5


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    eager = BarkModel.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    sdpa = copy.deepcopy(eager)
    switched = use_sdpa_attention(sdpa)
    assert switched == 3 * eager.config.semantic_config.num_layers
    return eager, sdpa


def padded_batch(vocab: int, lengths: list[int], total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids, each row right-padded after its own length, and the matching 0/1 mask."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (len(lengths), total), generator=generator)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return ids, mask


@pytest.mark.parametrize("stage", ["semantic", "coarse_acoustics"])
def test_causal_stage_matches_eager_with_padding_mask(models, stage):
    eager, sdpa = models
    vocab = getattr(eager, stage).config.input_vocab_size
    ids, mask = padded_batch(vocab, [40, 23, 7], 40)
    with torch.inference_mode():
        expected = getattr(eager, stage)(input_ids=ids, attention_mask=mask).logits
        actual = getattr(sdpa, stage)(input_ids=ids, attention_mask=mask).logits
    for row, length in enumerate([40, 23, 7]):
        torch.testing.assert_close(actual[row, :length], expected[row, :length], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("stage", ["semantic", "coarse_acoustics"])
def test_causal_stage_matches_eager_when_decoding_with_a_cache(models, stage):
    """Prefill, then several tokens at once against the cache (the bottom-right causal case)."""
    eager, sdpa = models
    ids, _ = padded_batch(getattr(eager, stage).config.input_vocab_size, [30, 30], 30)
    outputs = []
    with torch.inference_mode():
        for model in (eager, sdpa):
            module = getattr(model, stage)
            prefill = module(input_ids=ids[:, :20], use_cache=True)
            step = module(input_ids=ids[:, 20:23], cache=prefill.cache, use_cache=True)
            single = module(input_ids=ids[:, 23:24], cache=step.cache, use_cache=True)
            outputs.append(torch.cat([prefill.logits, step.logits, single.logits], dim=1))
    torch.testing.assert_close(outputs[1], outputs[0], atol=ATOL, rtol=1e-4)


def test_fine_stage_bidirectional_matches_eager_with_padding_mask(models):
    eager, sdpa = models
    n_codes = eager.fine_acoustics.config.n_codes_total
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 1024, (2, 64, n_codes), generator=generator)
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[1, 40:] = 0
    with torch.inference_mode():
        for codebook in (2, n_codes - 1):
            expected = eager.fine_acoustics(codebook, ids, attention_mask=mask).logits
            actual = sdpa.fine_acoustics(codebook, ids, attention_mask=mask).logits
            torch.testing.assert_close(actual[0], expected[0], atol=ATOL, rtol=1e-4)
            torch.testing.assert_close(actual[1, :40], expected[1, :40], atol=ATOL, rtol=1e-4)


def test_generation_is_token_identical_under_greedy_decoding(models, tiny_checkpoint):
    from transformers import BarkProcessor

    eager, sdpa = models
    processor = BarkProcessor.from_pretrained(tiny_checkpoint)
    inputs = processor(["Hello there.", "A longer line of text."], voice_preset="v2/en_speaker_2")
    tokens = []
    with torch.inference_mode():
        for model in (eager, sdpa):
            torch.manual_seed(0)
            audio = model.generate(**inputs, do_sample=False, semantic_max_new_tokens=24)
            tokens.append(audio)
    torch.testing.assert_close(tokens[1], tokens[0], atol=1e-4, rtol=1e-4)


def test_every_attention_module_is_switched(models):
    _, sdpa = models
    attention_modules = [m for m in sdpa.modules() if "Attention" in type(m).__name__]
    assert attention_modules and all(isinstance(m, BarkSdpaAttention) for m in attention_modules)
