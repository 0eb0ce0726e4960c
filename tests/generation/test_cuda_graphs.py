"""CUDA graphs on a real GPU, in the dtype the server uses there (fp16). Skipped without CUDA.

Issue #12: the only CUDA test ran fp32 and never called `capture_graphs`. These capture every
(stage, batch bucket, key range) the server captures at warm-up, compare a replayed step with the
same step run eagerly after a real prefill, check that a capture that really fails (a host sync
inside the captured step) turns graphs off for that one shape only, and start the engine with an
explicit `decoder=cudagraph`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import BarkModel, BarkProcessor

from model_server.config import Settings
from model_server.generation.decoding import StaticBarkDecoder, build_decoder
from model_server.generation.engine import BarkEngine, Sampling, tokenize_chunks
from model_server.generation.kv_cache import device_memory
from model_server.generation.step_runner import _MIN_DECODE_POSITION

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
TEXTS = ["Hello world.", "Speech from a fast model server", "The quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def fp16_model(tiny_checkpoint: Path) -> BarkModel:
    return BarkModel.from_pretrained(tiny_checkpoint, dtype=torch.float16).to(CUDA).eval()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def processor(tiny_checkpoint: Path) -> BarkProcessor:
    return BarkProcessor.from_pretrained(tiny_checkpoint)


def encoded(processor: BarkProcessor, rows: int) -> Any:
    return tokenize_chunks(processor.tokenizer, TEXTS[:rows], 256, CUDA)


def semantic_config(model: BarkModel, max_new_tokens: int) -> Any:
    from transformers.models.bark.generation_configuration_bark import BarkSemanticGenerationConfig

    defaults = dict(model.generation_config.semantic_config)
    return BarkSemanticGenerationConfig(
        **{**defaults, "do_sample": False, "temperature": 1.0, "max_new_tokens": max_new_tokens}
    )


def expected_shapes(decoder: StaticBarkDecoder) -> set[tuple[str, int, int]]:
    buckets = [1 << n for n in range(decoder.max_rows.bit_length()) if 1 << n <= decoder.max_rows]
    shapes = set()
    for stage in (decoder._semantic, decoder._coarse):
        kv_lens = {decoder._kv_len(stage, p) for p in range(_MIN_DECODE_POSITION, stage.cache.max_positions)}
        shapes |= {(stage.name, rows, kv_len) for rows in buckets for kv_len in kv_lens}
    return shapes


@torch.inference_mode()
def test_every_bucket_is_captured_in_fp16(fp16_model: BarkModel) -> None:
    decoder = build_decoder(fp16_model, "cudagraph", CUDA, max_batch_size=8)
    assert isinstance(decoder, StaticBarkDecoder) and decoder.dtype == torch.float16
    decoder.capture_graphs(strict=True)
    wanted = expected_shapes(decoder)
    assert len(wanted) == 2 * 4 * 3  # 2 stages x buckets 1, 2, 4, 8 x key ranges 512, 768, 1024
    assert wanted <= set(decoder.graphs.graphs)
    assert not decoder.eager_shapes


@torch.inference_mode()
def test_a_replayed_step_equals_the_eager_step_after_a_real_prefill(
    fp16_model: BarkModel, processor: BarkProcessor
) -> None:
    decoder = build_decoder(fp16_model, "cudagraph", CUDA, max_batch_size=4)
    assert isinstance(decoder, StaticBarkDecoder)
    stage = decoder._semantic
    table = stage.weights.token_embedding
    ids = encoded(processor, 3)["input_ids"] + 10_048
    prompt = torch.cat([F.embedding(ids, table), F.embedding(torch.full((3, 1), 129_599, device=CUDA), table)], 1)
    for position in (_MIN_DECODE_POSITION, 600, 1000):  # one step in each key range
        decoder._prefill(stage, prompt)
        decoder._token[:3] = torch.tensor([5, 77, 9_000], device=CUDA)
        replayed = decoder._forward_token(stage, 3, position).float().clone()
        assert ("semantic", 4, decoder._kv_len(stage, position)) in decoder.graphs.graphs
        eager = decoder._step(stage, 4, decoder._kv_len(stage, position))[:3].float()
        torch.testing.assert_close(replayed, eager, rtol=1e-2, atol=1e-2)


@torch.inference_mode()
def test_greedy_tokens_with_graphs_equal_the_same_decoder_run_eagerly(
    fp16_model: BarkModel, processor: BarkProcessor
) -> None:
    graphs = build_decoder(fp16_model, "cudagraph", CUDA, max_batch_size=4)
    eager = StaticBarkDecoder(fp16_model, CUDA, max_batch_size=4, pad_batches=True, stop_check_interval=8)
    assert isinstance(graphs, StaticBarkDecoder)
    inputs = encoded(processor, 3)
    config = semantic_config(fp16_model, 40)
    with_graphs = graphs.semantic(inputs["input_ids"], inputs["attention_mask"], None, config, [40, 25, 40])
    without = eager.semantic(inputs["input_ids"], inputs["attention_mask"], None, config, [40, 25, 40])
    assert torch.equal(with_graphs, without)
    assert not graphs.eager_shapes


@torch.inference_mode()
def test_a_real_capture_failure_turns_graphs_off_for_that_shape_only(
    fp16_model: BarkModel, processor: BarkProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = build_decoder(fp16_model, "cudagraph", CUDA, max_batch_size=4)
    assert isinstance(decoder, StaticBarkDecoder)
    step = decoder._step

    def step_syncing_at_two_rows(stage: Any, rows: int, kv_len: int) -> torch.Tensor:
        logits = step(stage, rows, kv_len)
        if rows == 2:
            logits.sum().item()  # a host sync: not permitted while the stream is capturing
        return logits

    monkeypatch.setattr(decoder, "_step", step_syncing_at_two_rows)
    config = semantic_config(fp16_model, 12)
    for rows in (2, 1, 2):
        inputs = encoded(processor, rows)
        tokens = decoder.semantic(inputs["input_ids"], inputs["attention_mask"], None, config, [12] * rows)
        assert tokens.shape[0] == rows and 0 < tokens.shape[1] <= 12
    assert decoder.eager_shapes == {("semantic", 2, 512)}
    assert ("semantic", 1, 512) in decoder.graphs.graphs and decoder.use_cuda_graphs


def test_the_engine_starts_with_explicit_cuda_graphs_in_fp16(tiny_checkpoint: Path) -> None:
    settings = Settings(
        model_dir=tiny_checkpoint, device="cuda", dtype="float16", decoder="cudagraph", max_batch_size=4, warmup=False
    )
    engine = BarkEngine(settings)
    engine.warm_up()  # captures every bucket, strictly
    assert (engine.decoder_name, engine.decoder_fallback, engine.attention) == ("cudagraph", None, "sdpa")
    assert engine.decoder is not None and not engine.decoder.eager_shapes
    output = engine.generate_batch(["Hello there.", "Bye."], None, Sampling(do_sample=False), [10, 6])
    assert all(len(wave) > 0 for wave in output.waveforms)


def test_free_device_memory_is_read_from_the_driver() -> None:
    memory = device_memory(CUDA)
    assert memory is not None
    free, total = memory
    assert 0 < free <= total
