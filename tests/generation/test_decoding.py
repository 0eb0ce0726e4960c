"""The static-cache decoder reproduces transformers' Bark generation token for token (greedy, fp32).

The random tiny checkpoint (almost) never emits EOS, so its rows run to their per-row budgets: that
exercises the padding of finished rows, and coarse generation spans two sliding windows. For the
EOS rules the tests give a copy of the model a louder EOS row (`with_eos_row`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BarkModel, BarkProcessor, StoppingCriteriaList
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkSemanticGenerationConfig,
)

from model_server import metrics
from model_server.generation import decoding
from model_server.generation.cuda_graphs import CapturedStep
from model_server.generation.decoding import (
    DecoderUnavailable,
    StaticBarkDecoder,
    build_decoder,
    choose_decoder,
    select_decoder,
)
from model_server.generation.engine import _PerRowTokenBudget, tokenize_chunks
from model_server.generation.faults import run_splitting_on_oom
from model_server.generation.step_runner import batch_bucket

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TEXTS = [
    "Hello world.",
    "The quick brown fox jumps over the lazy dog, again and again, until the end of the day.",
    "Speech from a fast model server",
]
BUDGETS = [30, 20, 40]
VOICE = "v2/en_speaker_3"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def processor(tiny_checkpoint: Path) -> BarkProcessor:
    return BarkProcessor.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> BarkModel:
    return BarkModel.from_pretrained(tiny_checkpoint).eval()


def with_eos_row(checkpoint: Path, norm: float) -> BarkModel:
    """The tiny model with a semantic EOS logit of `norm` along a fixed random direction."""
    loaded = BarkModel.from_pretrained(checkpoint).eval()
    direction = torch.randn(loaded.config.semantic_config.hidden_size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        loaded.semantic.lm_head.weight[10_000] = direction / direction.norm() * norm
    return loaded


@pytest.fixture(scope="module")
def eos_model(tiny_checkpoint: Path) -> BarkModel:
    """Greedy decoding picks EOS at the second step."""
    return with_eos_row(tiny_checkpoint, 6.0)


@pytest.fixture(scope="module")
def hesitant_eos_model(tiny_checkpoint: Path) -> BarkModel:
    """EOS never wins greedily within 30 steps, but its probability passes 1e-4 at the second."""
    return with_eos_row(tiny_checkpoint, 0.18)


def encode(processor: BarkProcessor, rows: int) -> Any:
    return tokenize_chunks(processor.tokenizer, TEXTS[:rows], 256, CPU)


def history(processor: BarkProcessor, voice: str | None) -> dict[str, torch.Tensor] | None:
    if voice is None:
        return None
    return dict(processor("", voice_preset=voice, return_tensors="pt")["history_prompt"])


def configs(
    model: BarkModel, max_new_tokens: int, **semantic: Any
) -> tuple[BarkSemanticGenerationConfig, BarkCoarseGenerationConfig]:
    defaults = model.generation_config
    greedy = {"do_sample": False, "temperature": 1.0}
    semantic_config = BarkSemanticGenerationConfig(
        **{**dict(defaults.semantic_config), **greedy, "max_new_tokens": max_new_tokens, **semantic}
    )
    coarse_config = BarkCoarseGenerationConfig(**{**dict(defaults.coarse_acoustics_config), **greedy})
    return semantic_config, coarse_config


def hf_semantic(
    model: BarkModel,
    encoded: Any,
    voice_history: dict[str, torch.Tensor] | None,
    config: BarkSemanticGenerationConfig,
    budgets: list[int],
) -> torch.Tensor:
    """What the engine runs today: transformers' generate with the per-row budget criterion."""
    return model.semantic.generate(
        encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
        history_prompt=voice_history,
        semantic_generation_config=config,
        stopping_criteria=StoppingCriteriaList([_PerRowTokenBudget(budgets, 257, model.device)]),
        pad_token_id=config.semantic_pad_token,
    )


def hf_coarse(
    model: BarkModel,
    semantic: torch.Tensor,
    voice_history: dict[str, torch.Tensor] | None,
    semantic_config: BarkSemanticGenerationConfig,
    coarse_config: BarkCoarseGenerationConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' coarse stage with output lengths, on a copy (it overwrites its input in place)."""
    return model.coarse_acoustics.generate(
        semantic.clone(),
        history_prompt=voice_history,
        semantic_generation_config=semantic_config,
        coarse_generation_config=coarse_config,
        codebook_size=1024,
        return_output_lengths=True,
    )


@pytest.mark.parametrize("voice", [None, VOICE])
@pytest.mark.parametrize("rows", [1, 3])
@torch.inference_mode()
def test_greedy_semantic_and_coarse_tokens_equal_transformers(
    model: BarkModel, processor: BarkProcessor, rows: int, voice: str | None
) -> None:
    encoded = encode(processor, rows)
    voice_history = history(processor, voice)
    budgets = BUDGETS[:rows]
    semantic_config, coarse_config = configs(model, max(budgets))
    # Padded to power-of-two buckets as under CUDA graphs: 3 rows run as 4.
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=4, pad_batches=True)

    expected = hf_semantic(model, encoded, voice_history, semantic_config, budgets)
    semantic = decoder.semantic(
        encoded["input_ids"], encoded["attention_mask"], voice_history, semantic_config, budgets
    )
    assert torch.equal(semantic, expected)
    # Each row stopped at its own budget and was padded with the pad (= EOS) token after it.
    assert (semantic != semantic_config.semantic_pad_token).sum(1).tolist() == budgets

    expected_coarse, expected_lengths = hf_coarse(model, expected, voice_history, semantic_config, coarse_config)
    coarse, lengths = decoder.coarse(semantic, voice_history, semantic_config, coarse_config, 1024)
    assert coarse.shape[1] > coarse_config.sliding_window_len  # more than one sliding window ran
    assert torch.equal(coarse, expected_coarse)
    assert torch.equal(lengths, expected_lengths)
    assert torch.equal(semantic, expected)  # and, unlike transformers, the input was left alone


@pytest.mark.parametrize("min_eos_p", [None, 0.2])
@torch.inference_mode()
def test_eos_ends_rows_like_transformers(
    eos_model: BarkModel, processor: BarkProcessor, min_eos_p: float | None
) -> None:
    model = eos_model
    encoded = encode(processor, 3)
    semantic_config, _ = configs(model, 40, min_eos_p=min_eos_p)
    expected = hf_semantic(model, encoded, None, semantic_config, [40, 40, 40])
    # A stop check every 8 steps (the CUDA setting) must still cut the output where all rows ended.
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=4, stop_check_interval=8)
    semantic = decoder.semantic(encoded["input_ids"], encoded["attention_mask"], None, semantic_config, None)
    assert semantic.shape[1] < 40
    assert (semantic[:, -1] == semantic_config.eos_token_id).all()
    assert torch.equal(semantic, expected)


@torch.inference_mode()
def test_min_eos_p_stops_before_greedy_would(hesitant_eos_model: BarkModel, processor: BarkProcessor) -> None:
    """A low `min_eos_p` forces EOS as soon as its probability passes it, as transformers does."""
    model = hesitant_eos_model
    encoded = encode(processor, 2)
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=2)
    lengths = {}
    for min_eos_p in (None, 1e-4):
        semantic_config, _ = configs(model, 30, min_eos_p=min_eos_p)
        expected = hf_semantic(model, encoded, None, semantic_config, [30, 30])
        semantic = decoder.semantic(encoded["input_ids"], encoded["attention_mask"], None, semantic_config, [30, 30])
        assert torch.equal(semantic, expected)
        lengths[min_eos_p] = semantic.shape[1]
    assert lengths[1e-4] < lengths[None] == 30


@torch.inference_mode()
def test_sampling_is_seeded_and_stays_in_each_stage_vocabulary(model: BarkModel, processor: BarkProcessor) -> None:
    encoded = encode(processor, 3)
    voice_history = history(processor, VOICE)
    semantic_config, coarse_config = configs(model, 25, do_sample=True, temperature=0.7, top_k=20)
    coarse_config = BarkCoarseGenerationConfig(**{**coarse_config.to_dict(), "do_sample": True, "temperature": 0.7})
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=4)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        semantic = decoder.semantic(
            encoded["input_ids"], encoded["attention_mask"], voice_history, semantic_config, [25, 10, 25]
        )
        coarse, _ = decoder.coarse(semantic, voice_history, semantic_config, coarse_config, 1024)
        return semantic, coarse

    semantic, coarse = run(0)
    again_semantic, again_coarse = run(0)
    other_semantic, _ = run(1)
    assert torch.equal(semantic, again_semantic) and torch.equal(coarse, again_coarse)
    assert not torch.equal(semantic, other_semantic)
    # Semantic tokens are speech tokens or the pad/EOS token; the suppressed range never appears.
    assert ((semantic >= 0) & (semantic <= semantic_config.semantic_pad_token)).all()
    assert (semantic[1, 10:] == semantic_config.semantic_pad_token).all()  # budget 10
    # Coarse tokens alternate: first codebook at even steps, second at odd ones (with offsets).
    # transformers' AlternatingCodebooksLogitsProcessor leaves ids above the second codebook open.
    first, second = coarse[:, 0::2], coarse[:, 1::2]
    assert ((first >= 10_000) & (first < 11_024)).all()
    assert ((second >= 11_024) & (second < 12_096)).all()


class ReplayedClosure:
    """Stands in for a CUDA graph on CPU: replay re-runs the captured step into the same output.

    A real graph replays fixed kernels on fixed addresses; re-running the closure is equivalent as
    long as the step reads its inputs only from the decoder's static buffers, which is what this
    checks (a step that captured a Python value would replay a stale one).
    """

    def __init__(self, step: Any):
        self.step = step
        self.logits = step().clone()
        self.replays = 0

    def replay(self) -> None:
        self.logits.copy_(self.step())
        self.replays += 1


def fake_graphs(decoder: StaticBarkDecoder, monkeypatch: pytest.MonkeyPatch) -> list[ReplayedClosure]:
    captured: list[ReplayedClosure] = []

    def capture(step: Any) -> CapturedStep:
        graph = ReplayedClosure(step)
        captured.append(graph)
        return CapturedStep(graph, graph.logits)

    monkeypatch.setattr(decoder.graphs, "capture", capture)
    monkeypatch.setattr(decoder, "use_cuda_graphs", True)
    return captured


@torch.inference_mode()
def test_the_graph_replay_path_reproduces_transformers(
    model: BarkModel, processor: BarkProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = encode(processor, 3)
    voice_history = history(processor, VOICE)
    semantic_config, coarse_config = configs(model, 30)
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=4, pad_batches=True, stop_check_interval=8)
    graphs = fake_graphs(decoder, monkeypatch)

    # Warm-up captures both stages x buckets 1, 2, 4 x key ranges 512, 768, 1024.
    assert decoder.capture_graphs() == 2 * 3 * 3
    expected = hf_semantic(model, encoded, voice_history, semantic_config, [30, 20, 30])
    semantic = decoder.semantic(
        encoded["input_ids"], encoded["attention_mask"], voice_history, semantic_config, [30, 20, 30]
    )
    assert torch.equal(semantic, expected)
    expected_coarse, _ = hf_coarse(model, expected, voice_history, semantic_config, coarse_config)
    coarse, _ = decoder.coarse(semantic, voice_history, semantic_config, coarse_config, 1024)
    assert torch.equal(coarse, expected_coarse)
    assert len(graphs) == 18  # nothing was captured during generation
    assert sum(graph.replays for graph in graphs) == semantic.shape[1] - 1 + coarse.shape[1] - 2


def fallbacks(reason: str) -> float:
    return metrics.DECODER_FALLBACKS.labels(reason=reason)._value.get()


def failing_capture_for(
    decoder: StaticBarkDecoder,
    monkeypatch: pytest.MonkeyPatch,
    failing: set[int],
    error: Callable[[], BaseException],
) -> list[ReplayedClosure]:
    """Fake graphs (as `fake_graphs`) whose capture raises `error()` for batch buckets in `failing`."""
    graphs = fake_graphs(decoder, monkeypatch)
    fake_capture = decoder.graphs.capture
    attempts: list[tuple[str, int, int]] = []

    def capture(step: Any) -> CapturedStep:
        if attempts[-1][1] in failing:
            raise error()
        return fake_capture(step)

    original_get = decoder.graphs.get

    def get_counting(key: Any, step: Any, preserve: Any = None) -> CapturedStep | None:
        if key not in decoder.graphs.graphs and key not in decoder.graphs.eager_shapes:
            attempts.append(key)
        return original_get(key, step, preserve)

    monkeypatch.setattr(decoder.graphs, "capture", capture)
    monkeypatch.setattr(decoder.graphs, "get", get_counting)
    decoder.capture_attempts = attempts  # type: ignore[attr-defined]
    return graphs


@torch.inference_mode()
def test_a_capture_failure_mid_request_falls_back_for_that_shape_only(
    model: BarkModel,
    processor: BarkProcessor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #12: one failed capture used to turn graphs off for the process's life, silently in the metrics."""
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=4, pad_batches=True)
    graphs = failing_capture_for(
        decoder, monkeypatch, {2}, lambda: RuntimeError("operation not permitted when stream is capturing")
    )
    semantic_config, _ = configs(model, 12)
    before = fallbacks("capture_failed")

    def run(rows: int) -> None:
        encoded = encode(processor, rows)
        expected = hf_semantic(model, encoded, None, semantic_config, [12] * rows)
        semantic = decoder.semantic(encoded["input_ids"], encoded["attention_mask"], None, semantic_config, [12] * rows)
        assert torch.equal(semantic, expected)  # still correct, whichever way each step ran

    with caplog.at_level(logging.WARNING, logger="model_server.generation.cuda_graphs"):
        run(2)  # the 2-row bucket fails to capture: eager for that shape
    assert decoder.eager_shapes == {("semantic", 2, 512)}
    assert "semantic step at 2 rows over 512 keys" in caplog.text and "stream is capturing" in caplog.text
    assert fallbacks("capture_failed") == before + 1
    run(2)  # not retried, not counted again
    assert decoder.capture_attempts.count(("semantic", 2, 512)) == 1  # type: ignore[attr-defined]
    assert fallbacks("capture_failed") == before + 1
    run(1)  # other shapes still capture and replay
    assert decoder.use_cuda_graphs and len(graphs) == 1 and graphs[0].replays == 11


@torch.inference_mode()
def test_out_of_memory_in_a_capture_reaches_the_batch_splitting_path(
    model: BarkModel, processor: BarkProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OOM while capturing (even one wrapped by the failing end of capture) is an OOM, not a capture
    problem: faults.py retries the batch in halves, and the shape is not marked eager."""
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=4, pad_batches=True)

    def error() -> BaseException:
        """What torch.cuda.graph's exit raises when an allocation failed inside the capture."""
        try:
            try:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            except torch.cuda.OutOfMemoryError:
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B904
        except RuntimeError as wrapped:
            return wrapped

    failing_capture_for(decoder, monkeypatch, {2}, error)
    encoded = encode(processor, 2)
    semantic_config, _ = configs(model, 10)
    expected = hf_semantic(model, encoded, None, semantic_config, [10, 10])

    def generate(rows: list[int]) -> list[torch.Tensor]:
        semantic = decoder.semantic(
            encoded["input_ids"][rows], encoded["attention_mask"][rows], None, semantic_config, [10] * len(rows)
        )
        return list(semantic)

    with pytest.raises(torch.cuda.OutOfMemoryError, match="Tried to allocate"):
        generate([0, 1])
    halves = run_splitting_on_oom(generate, [0, 1])
    assert torch.equal(torch.stack(halves), expected)
    assert not decoder.eager_shapes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.inference_mode()
def test_real_cuda_graphs_reproduce_transformers(tiny_checkpoint: Path, processor: BarkProcessor) -> None:
    cuda = torch.device("cuda")
    on_gpu = BarkModel.from_pretrained(tiny_checkpoint).to(cuda).eval()  # type: ignore[arg-type]
    encoded = encode(processor, 3).to(cuda)
    voice_history = {key: value.to(cuda) for key, value in history(processor, VOICE).items()}  # type: ignore[union-attr]
    semantic_config, coarse_config = configs(on_gpu, 30)
    decoder = build_decoder(on_gpu, "cudagraph", cuda, max_batch_size=4)
    assert isinstance(decoder, StaticBarkDecoder) and decoder.use_cuda_graphs
    expected = hf_semantic(on_gpu, encoded, voice_history, semantic_config, [30, 20, 30])
    semantic = decoder.semantic(
        encoded["input_ids"], encoded["attention_mask"], voice_history, semantic_config, [30, 20, 30]
    )
    assert torch.equal(semantic, expected)
    expected_coarse, _ = hf_coarse(on_gpu, expected, voice_history, semantic_config, coarse_config)
    coarse, _ = decoder.coarse(semantic, voice_history, semantic_config, coarse_config, 1024)
    assert torch.equal(coarse, expected_coarse)
    assert decoder.use_cuda_graphs  # no capture failed along the way


def test_batches_are_padded_to_power_of_two_buckets() -> None:
    assert [batch_bucket(rows) for rows in (1, 2, 3, 5, 8, 9, 33)] == [1, 2, 4, 8, 8, 16, 64]
    with pytest.raises(ValueError):
        batch_bucket(0)


@torch.inference_mode()
def test_a_batch_above_max_batch_size_is_refused(model: BarkModel, processor: BarkProcessor) -> None:
    encoded = encode(processor, 3)
    semantic_config, _ = configs(model, 5)
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=2)
    with pytest.raises(ValueError, match="max_batch_size"):
        decoder.semantic(encoded["input_ids"], encoded["attention_mask"], None, semantic_config, None)


@torch.inference_mode()
def test_more_tokens_than_positions_is_refused(model: BarkModel, processor: BarkProcessor) -> None:
    encoded = encode(processor, 1)
    semantic_config, _ = configs(model, 769)  # 257 prompt + 768 new tokens just fit in 1024 positions
    decoder = StaticBarkDecoder(model, CPU, max_batch_size=1)
    with pytest.raises(ValueError, match="positions"):
        decoder.semantic(encoded["input_ids"], encoded["attention_mask"], None, semantic_config, None)


def test_auto_picks_cuda_graphs_on_cuda_and_the_static_path_on_cpu() -> None:
    assert choose_decoder("auto", torch.device("cuda")) == "cudagraph"
    assert choose_decoder("auto", CPU) == "static"
    assert choose_decoder("transformers", CPU) == "transformers"
    with pytest.raises(RuntimeError, match="CUDA"):
        choose_decoder("cudagraph", CPU)


def test_build_decoder_returns_none_for_transformers_and_a_decoder_for_static(model: BarkModel) -> None:
    assert build_decoder(model, "transformers", CPU) is None
    assert isinstance(build_decoder(model, "static", CPU, max_batch_size=2), StaticBarkDecoder)


def test_an_explicit_cudagraph_that_cannot_run_stops_the_start(
    model: BarkModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #12: build_decoder used to drop to transformers' generate (6-7x slower per step) without a word."""
    with pytest.raises(DecoderUnavailable, match="CUDA"):
        build_decoder(model, "cudagraph", CPU, max_batch_size=2)
    # As if on a GPU where capture fails: the explicit setting is not silently replaced.
    monkeypatch.setattr(decoding, "choose_decoder", lambda setting, device: "cudagraph")
    before = fallbacks("cudagraph_unavailable")
    with pytest.raises(DecoderUnavailable, match="decoder=cudagraph cannot run here"):
        select_decoder(model, "cudagraph", CPU, max_batch_size=2)
    assert fallbacks("cudagraph_unavailable") == before


def test_under_auto_unavailable_graphs_fall_back_to_the_static_path_counted_and_named(
    model: BarkModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(decoding, "choose_decoder", lambda setting, device: "cudagraph")  # auto on "CUDA"
    before = fallbacks("cudagraph_unavailable")
    with caplog.at_level(logging.WARNING, logger="model_server.generation.decoding"):
        choice = select_decoder(model, "auto", CPU, max_batch_size=2)
    assert isinstance(choice.decoder, StaticBarkDecoder) and not choice.decoder.use_cuda_graphs
    assert (choice.name, choice.fallback) == ("static", "cudagraph_unavailable")
    assert fallbacks("cudagraph_unavailable") == before + 1
    assert "decoder=auto" in caplog.text and "CUDA graphs need a CUDA device" in caplog.text


def test_without_a_fallback_select_decoder_names_what_was_asked_for(model: BarkModel) -> None:
    for setting, name in (("auto", "static"), ("static", "static"), ("transformers", "transformers")):
        choice = select_decoder(model, setting, CPU, max_batch_size=2)
        assert (choice.name, choice.fallback) == (name, None)
        assert (choice.decoder is None) == (name == "transformers")
