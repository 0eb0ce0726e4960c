"""The engine on the tiny checkpoint: batched outputs are trimmed to each chunk's own length."""

from __future__ import annotations

import pytest

from model_server.config import Settings
from model_server.engine import BarkEngine, Sampling

HOP = 320  # EnCodec 24 kHz: samples per codec frame


@pytest.fixture(scope="module", params=["transformers", "static"])
def engine(request, tiny_checkpoint) -> BarkEngine:
    """Both decoders: transformers' generate and our static-KV-cache decoder."""
    settings = Settings(
        model_dir=tiny_checkpoint, semantic_tokens_per_word=4, semantic_tokens_min=4, decoder=request.param
    )
    built = BarkEngine(settings)
    assert built.decoder_name == request.param
    return built


TEXTS = ["Hi.", "A medium sized sentence here.", "A much longer sentence with quite a few more words."]
BUDGETS = [6, 20, 45]


def test_each_part_has_its_own_length_not_the_batch_maximum(engine):
    batched = engine.generate_batch(TEXTS, "v2/en_speaker_1", Sampling(do_sample=False), BUDGETS)
    lengths = [len(wave) for wave in batched.waveforms]
    assert all(length % HOP == 0 and length > 0 for length in lengths)
    assert len(set(lengths)) == 3, lengths
    assert lengths == sorted(lengths)
    # Each equals what the same chunk gives when generated alone: no padded tail from the batch.
    alone = [
        len(engine.generate_batch([text], "v2/en_speaker_1", Sampling(do_sample=False), [budget]).waveforms[0])
        for text, budget in zip(TEXTS, BUDGETS, strict=True)
    ]
    assert lengths == alone


def test_semantic_budget_bounds_each_chunk(engine):
    """Random weights never stop on their own: a chunk's audio follows its token budget."""
    output = engine.generate_batch(["One.", "Two."], None, Sampling(do_sample=False), [10, 40])
    ratio = 75 / 49.9  # coarse frames per semantic token
    expected = [int(budget * ratio * 2 / 2) * HOP for budget in (10, 40)]
    assert [len(wave) for wave in output.waveforms] == expected


def test_stages_are_timed(engine):
    output = engine.generate_batch(["Time me."], None, Sampling(), [8])
    assert set(output.stage_seconds) == {"semantic", "coarse", "fine", "codec_decode"}
    assert all(seconds >= 0 for seconds in output.stage_seconds.values())


def test_budget_grows_with_words_within_bounds(engine):
    assert engine.semantic_budget(1) == 4
    assert engine.semantic_budget(10) == 40
    assert engine.semantic_budget(10_000) == engine.max_semantic_tokens
