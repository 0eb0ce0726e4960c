"""The engine on the tiny checkpoint: batched outputs are trimmed to each chunk's own length."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from prometheus_client import REGISTRY

from model_server.config import Settings
from model_server.generation import decoding
from model_server.generation import engine as engine_module
from model_server.generation.decoding import DecoderUnavailable
from model_server.generation.engine import BarkEngine, Sampling, attention_implementations, choose_attention
from model_server.model import BarkTTS

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


# -- attention: the server starts with flash-attn installed (issue #12) ------------------------------
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("decoder", ["static", "transformers"])
def test_the_engine_starts_with_flash_attn_installed(tiny_checkpoint: Path, tmp_path: Path, decoder: str) -> None:
    """With a stand-in flash_attn importable, attention=flash_attention_2 loads (the codec eager) and runs.

    transformers 5 used to pass flash_attention_2 to Encodec too, which refused it, so the `[gpu]`
    image crash-looped. The stand-in counts its calls per stage: with our decoder, the semantic and
    coarse hot loop (SDPA in decoding.py) never reaches flash-attn; only the fine stage does.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.flash_attn_standin",
            str(tmp_path),
            str(tiny_checkpoint),
            "flash_attention_2",
            decoder,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["attention"], report["decoder"]) == ("flash_attention_2", decoder)
    assert report["implementations"] == {
        "semantic": "flash_attention_2",
        "coarse_acoustics": "flash_attention_2",
        "fine_acoustics": "flash_attention_2",
        "codec_model": "eager",
    }
    assert report["samples"] > 0
    calls = report["flash_calls"]
    assert calls["fine"] > 0 and calls["codec_decode"] == 0
    if decoder == "static":
        assert calls["semantic"] == calls["coarse"] == 0
    else:
        assert calls["semantic"] > 0 and calls["coarse"] > 0


def test_auto_attention_is_sdpa_even_where_flash_attn_could_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "flash_attention_available", lambda device: True)
    assert choose_attention("auto", torch.device("cuda")) == "sdpa"
    assert choose_attention("flash_attention_2", torch.device("cuda")) == "flash_attention_2"
    monkeypatch.setattr(engine_module, "flash_attention_available", lambda device: False)
    with pytest.raises(RuntimeError, match="flash-attn"):
        choose_attention("flash_attention_2", torch.device("cuda"))


def test_every_sub_model_but_the_codec_gets_the_attention_asked_for() -> None:
    for attention, bark in (("flash_attention_2", "flash_attention_2"), ("sdpa", "eager"), ("eager", "eager")):
        assert attention_implementations(attention) == {
            "": bark,
            "semantic_config": bark,
            "coarse_acoustics_config": bark,
            "fine_acoustics_config": bark,
            "codec_config": "eager",
        }


# -- decoder fallbacks are named (issue #12) ----------------------------------------------------------
def test_a_decoder_fallback_under_auto_shows_in_bark_model_info(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As on a GPU where graphs cannot be captured: the model info says static, and why."""
    monkeypatch.setattr(decoding, "choose_decoder", lambda setting, device: "cudagraph")
    settings = Settings(
        model_dir=tiny_checkpoint, decoder="auto", warmup=False, model_name="fallback-test", voice_store=str(tmp_path)
    )
    model = BarkTTS(settings)
    assert model.load()
    assert model.service.engine is not None
    assert (model.service.engine.decoder_name, model.service.engine.decoder_fallback) == (
        "static",
        "cudagraph_unavailable",
    )
    labels = {"source": str(tiny_checkpoint), "decoder": "static", "decoder_fallback": "cudagraph_unavailable"}
    assert (
        REGISTRY.get_sample_value(
            "bark_model_info", {**labels, "device": "cpu", "dtype": "float32", "attention": "sdpa"}
        )
        == 1
    )


def test_an_explicit_decoder_that_cannot_run_stops_the_engine(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decoding, "choose_decoder", lambda setting, device: "cudagraph")
    with pytest.raises(DecoderUnavailable, match="cudagraph"):
        BarkEngine(Settings(model_dir=tiny_checkpoint, decoder="cudagraph", warmup=False))
