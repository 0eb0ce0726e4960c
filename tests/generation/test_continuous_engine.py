"""The continuous row engine on the tiny checkpoint (CPU, fp32): each row gets what it gets alone.

Rows of different voices, settings and seeds share steps; a row's tokens (and so its audio) must not
depend on its batch mates or on when it joined. The greedy comparisons below are exact: on this CPU
the per-row results of a batched matmul equal the single-row ones (checked, not assumed: should a
BLAS reorder reductions by batch shape, `test_step_logits_alone_and_batched_agree` bounds the drift
of the logits and the token tests would show which rows flipped).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import StoppingCriteriaList
from transformers.generation.logits_process import (
    AlternatingCodebooksLogitsProcessor,
    BarkEosPrioritizerLogitsProcessor,
)

from model_server import metrics
from model_server.config import Settings
from model_server.generation.continuous.bark_rows import TOP_K, BarkRowEngine
from model_server.generation.continuous.sampling import coarse_scores, semantic_scores, uniform_noise
from model_server.generation.decoding import _SuppressTokens
from model_server.generation.engine import BarkEngine, Sampling, _PerRowTokenBudget, tokenize_chunks
from tests.generation.row_runs import run_rows as run
from tests.generation.row_sampling import RowSampling, choose_tokens, warp

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

CPU = torch.device("cpu")
GREEDY = Sampling(do_sample=False)
TEXTS = ["Hello world.", "The quick brown fox jumps over the lazy dog again.", "Speech from a fast server"]
BUDGETS = [30, 20, 40]


class TokenRows(BarkRowEngine):
    """Also hands back each row's semantic and coarse tokens: the tiny codec's random weights make
    audio a weak witness (different tokens can decode to the same waveform)."""

    def _finish(self, row, fine):  # type: ignore[no-untyped-def]
        plan = row.coarse
        return (tuple(row.semantic), tuple(plan.tokens[plan.history_length :]), super()._finish(row, fine))


@pytest.fixture()
def rows(engine: BarkEngine) -> BarkRowEngine:
    return TokenRows(engine, max_rows=8)


def same(left: tuple, right: tuple) -> bool:
    """Same semantic and coarse tokens and the same waveform."""
    return left[0] == right[0] and left[1] == right[1] and np.array_equal(left[2], right[2])


def job(text: str, voice: str | None, sampling: Sampling, budget: int) -> SimpleNamespace:
    payload = SimpleNamespace(text=text, budget=budget)
    return SimpleNamespace(key=(voice, sampling), payload=payload, seed=None, spec=(text, voice, sampling, budget))


def alone(rows: BarkRowEngine, text: str, voice: str | None, sampling: Sampling, budget: int) -> tuple:
    single = job(text, voice, sampling, budget)
    return run(rows, [single])[id(single)]


def transformers_tokens(engine: BarkEngine, voice: str, texts: list[str], budgets: list[int]) -> list[tuple]:
    """Semantic and coarse tokens of one batch by transformers' own `generate`, each row trimmed."""
    semantic_config, coarse_config, _ = engine._configs(GREEDY, max(budgets))
    encoded = tokenize_chunks(engine.processor.tokenizer, texts, semantic_config.max_input_semantic_length, CPU)
    history = engine.voices.prompt(voice)
    prompt_length = semantic_config.max_input_semantic_length + 1
    semantic = engine.model.semantic.generate(
        encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
        history_prompt=history,
        semantic_generation_config=semantic_config,
        stopping_criteria=StoppingCriteriaList([_PerRowTokenBudget(budgets, prompt_length, CPU)]),
        pad_token_id=semantic_config.semantic_pad_token,
    )
    own = [[int(t) for t in row if t != semantic_config.semantic_pad_token] for row in semantic.tolist()]
    coarse, lengths = engine.model.coarse_acoustics.generate(
        semantic.clone(),
        history_prompt=history,
        semantic_generation_config=semantic_config,
        coarse_generation_config=coarse_config,
        codebook_size=engine.codebook_size,
        return_output_lengths=True,
    )
    return [(tuple(tokens), tuple(coarse[index, : int(lengths[index])].tolist())) for index, tokens in enumerate(own)]


def test_single_voice_greedy_batch_equals_transformers_generate(engine: BarkEngine, rows: BarkRowEngine):
    expected = transformers_tokens(engine, "v2/en_speaker_3", TEXTS, BUDGETS)
    jobs = [job(text, "v2/en_speaker_3", GREEDY, budget) for text, budget in zip(TEXTS, BUDGETS, strict=True)]
    results = run(rows, jobs)
    assert [results[id(single)][:2] for single in jobs] == expected
    # Coarse ran more than one sliding window (60 tokens) for the longest row.
    assert max(len(coarse) for _, coarse in expected) > 60


def test_greedy_row_is_the_same_alone_among_other_voices_and_settings_and_joining_mid_flight(rows: BarkRowEngine):
    target = ("Speech from a fast server", "v2/en_speaker_1", GREEDY, 40)
    solo = alone(rows, *target)
    mates = [
        job("Hello world.", "v2/en_speaker_0", Sampling(semantic_temperature=0.9, seed=3), 30),
        job("Another voice entirely, longer text.", None, Sampling(coarse_temperature=0.4), 25),
        job("Greedy too.", "v2/en_speaker_5", GREEDY, 12),
    ]
    mixed = job(*target)
    assert same(run(rows, [*mates, mixed])[id(mixed)], solo)
    # Joining a batch that has been running for a while (the mates are in their semantic stage,
    # one of them already in its coarse stage by step 20).
    late = job(*target)
    mates = [job(f"Running row number {i}.", f"v2/en_speaker_{i}", Sampling(seed=i), 14 + 6 * i) for i in range(3)]
    assert same(run(rows, mates, joining={20: [late]})[id(late)], solo)


def test_seeded_sampled_audio_is_identical_alone_and_batched(rows: BarkRowEngine):
    seeded = Sampling(do_sample=True, semantic_temperature=0.8, coarse_temperature=0.6, fine_temperature=0.5, seed=1234)
    solo = alone(rows, "A seeded sentence to speak.", "v2/en_speaker_2", seeded, 30)
    assert same(alone(rows, "A seeded sentence to speak.", "v2/en_speaker_2", seeded, 30), solo)
    target = job("A seeded sentence to speak.", "v2/en_speaker_2", seeded, 30)
    mates = [
        job("Other seed.", "v2/en_speaker_2", Sampling(seed=99), 25),
        job("Other voice, other temperature.", "v2/en_speaker_7", Sampling(semantic_temperature=1.2, seed=7), 35),
        job("Unseeded.", None, Sampling(), 20),
    ]
    assert same(run(rows, [mates[0], target, *mates[1:]])[id(target)], solo)
    other_seed = alone(rows, "A seeded sentence to speak.", "v2/en_speaker_2", Sampling(seed=1235), 30)
    assert other_seed[0] != solo[0], "a different seed draws different tokens"


def test_step_logits_alone_and_batched_agree(rows: BarkRowEngine):
    """The per-row-position step: a row's logits do not depend on the other rows' positions, and a
    prefill of rows of different lengths in one call writes each row's cache as alone."""
    stepper = rows.stepper
    stage = stepper.stages["semantic"]
    hidden = stage.weights.hidden_size
    prompts = torch.randn(3, 300, hidden, generator=torch.Generator().manual_seed(0))
    lengths = [300, 257, 280]
    together = stepper.prefill("semantic", [0, 1, 2], [prompts[slot, :length] for slot, length in enumerate(lengths)])
    tokens = torch.tensor([5, 17, 42])
    kv_len = stepper.kv_len("semantic", max(lengths))
    batched = stepper.forward(stage, tokens, torch.tensor(lengths), kv_len)
    for slot, length in enumerate(lengths):
        first = stepper.prefill("semantic", [0], [prompts[slot, :length]])
        torch.testing.assert_close(together[slot : slot + 1], first, rtol=1e-5, atol=1e-5)
        single = stepper.forward(stage, tokens[slot : slot + 1], torch.tensor([length]), kv_len)
        torch.testing.assert_close(batched[slot : slot + 1], single, rtol=1e-5, atol=1e-5)


def test_per_row_rules_match_transformers_processors(engine: BarkEngine):
    """With one setting for every row, our fused chain gives transformers' processed scores."""
    decoder = engine.decoder
    assert decoder is not None
    logits = torch.randn(4, 10_048, generator=torch.Generator().manual_seed(1)) * 3
    logits[0, 10_000] = 30.0  # past min_eos_p: the EOS prioritiser leaves only EOS in this row
    logits[1, 10_000] = 13.0  # the EOS prioritiser's threshold is near here
    for sampling in (Sampling(semantic_temperature=0.7), GREEDY):
        semantic, coarse, _ = engine._configs(sampling, 30)
        pad = int(semantic.semantic_pad_token)
        suppressed = [*range(semantic.semantic_vocab_size, pad), *range(pad + 1, 10_048)]
        rules = [_SuppressTokens(suppressed, 10_048, torch.device("cpu"))]
        rules.append(BarkEosPrioritizerLogitsProcessor(eos_token_id=pad, min_eos_p=semantic.min_eos_p, device="cpu"))
        _, processors = decoder._processors(decoder._semantic, semantic, rules, 257, None)
        expected = logits.clone()
        for processor in processors:
            expected = processor(None, expected)
        settings = RowSampling.of([sampling.do_sample] * 4, [0.7] * 4, [1] * 4, [0] * 4, torch.device("cpu"))
        mask = torch.zeros(10_048, dtype=torch.bool)
        mask[suppressed] = True
        ours = warp(semantic_scores(logits, mask, pad, semantic.min_eos_p), settings, TOP_K)
        torch.testing.assert_close(torch.log_softmax(ours, -1), expected)

        coarse_logits = torch.randn(4, 12_096, generator=torch.Generator().manual_seed(2))
        for step in (0, 1):
            rule = AlternatingCodebooksLogitsProcessor(300, 10_000, 1024)
            _, processors = decoder._processors(decoder._coarse, coarse, [rule], 300, torch.zeros(1, 300).long())
            expected = coarse_logits.clone()
            for processor in processors:
                expected = processor(torch.zeros(4, 300 + step, dtype=torch.long), expected)
            parity = torch.full((4,), step)
            ours = warp(coarse_scores(coarse_logits, parity, 10_000, 1024), settings, TOP_K)
            torch.testing.assert_close(torch.log_softmax(ours, -1), expected)


def test_counter_based_sampling_draws_from_the_top_k_softmax():
    """Gumbel-max over the per-row noise: frequencies follow softmax(scores / T) over the top k."""
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]])).expand(4000, 5)
    draws = scores.shape[0]
    settings = RowSampling.of([True] * draws, [1.0] * draws, [11] * draws, list(range(draws)), CPU)
    frequencies = torch.bincount(choose_tokens(scores, settings, top_k=5), minlength=5).float() / draws
    torch.testing.assert_close(frequencies, torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]), atol=0.03, rtol=0)
    # top-k 2 and temperature 0.5: softmax(log([0.5, 0.3]) / 0.5) = [0.735, 0.265]; nothing else.
    cold = RowSampling.of([True] * draws, [0.5] * draws, [12] * draws, list(range(draws)), CPU)
    frequencies = torch.bincount(choose_tokens(scores, cold, top_k=2), minlength=5).float() / draws
    torch.testing.assert_close(frequencies, torch.tensor([0.735, 0.265, 0.0, 0.0, 0.0]), atol=0.03, rtol=0)
    # Greedy rows in the same call take the argmax.
    mixed = RowSampling.of([False, True], [1.0, 1.0], [1, 2], [0, 0], CPU)
    assert choose_tokens(scores[:2], mixed, top_k=5)[0] == 0


def test_noise_is_a_function_of_seed_draw_and_token_only():
    ids = torch.arange(1000).expand(2, 1000)
    keys = RowSampling.of([True, True], [1.0, 1.0], [11, 12], [0, 0], CPU).keys
    noise = uniform_noise(keys, ids)
    assert noise.min() > 0 and noise.max() < 1
    assert not torch.equal(noise[0], noise[1])
    # The same token gets the same noise wherever it sits among the candidates.
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(uniform_noise(keys, ids[:, shuffled]), noise[:, shuffled], rtol=0, atol=0)
    later = RowSampling.of([True, True], [1.0, 1.0], [11, 12], [1, 1], CPU).keys
    assert not torch.equal(uniform_noise(later, ids), noise), "the next draw has fresh noise"


class ReplayedStep:
    """Stands in for a CUDA graph on CPU: replay runs the captured step and writes its static output."""

    def __init__(self, step, output: torch.Tensor):  # type: ignore[no-untyped-def]
        self.step, self.output, self.replays = step, output, 0

    def replay(self) -> None:
        self.replays += 1
        self.output.copy_(self.step())


def fake_graphs(
    rows: BarkRowEngine, monkeypatch: pytest.MonkeyPatch, failing: Callable[[tuple], bool] = lambda key: False
) -> list[ReplayedStep]:
    """Graphs on CPU: as on CUDA, steps padded to buckets, prompts padded to one length, and each
    capture runs the step for real (a warm-up) before recording it; `failing` keys fail to capture."""
    captured: list[ReplayedStep] = []
    graphs = rows.stepper.graphs
    real_get = graphs.get

    def get(key, step, preserve=None):  # type: ignore[no-untyped-def]
        def capture(step):  # type: ignore[no-untyped-def]
            if failing(key):
                raise RuntimeError("operation not permitted when stream is capturing")
            captured.append(ReplayedStep(step, step().clone()))
            return SimpleNamespace(graph=captured[-1], output=captured[-1].output)

        monkeypatch.setattr(graphs, "capture", capture)
        return real_get(key, step, preserve)

    monkeypatch.setattr(graphs, "get", get)
    monkeypatch.setattr(rows.stepper, "use_cuda_graphs", True)
    monkeypatch.setattr(rows.stepper, "pad_prefills", True)
    return captured


MIXED = [
    (text, f"v2/en_speaker_{i}", GREEDY, budget) for i, (text, budget) in enumerate(zip(TEXTS, BUDGETS, strict=True))
]


def test_the_graph_path_pads_rows_and_prompts_and_gives_the_eager_tokens(
    engine: BarkEngine, rows: BarkRowEngine, monkeypatch: pytest.MonkeyPatch
):
    """The replay path (static inputs, rows padded to a power-of-two bucket, prompts to one length,
    captures that run the step once for real) on CPU gives the eager path's tokens and audio."""
    jobs = [job(*spec) for spec in MIXED]
    eager = run(rows, jobs)
    graphed = TokenRows(engine, max_rows=4)
    captured = fake_graphs(graphed, monkeypatch)
    at_warm_up = graphed.capture_graphs()
    # 2 stages x rows buckets 1, 2, 4 x key ranges 512, 768, 1024; and each stage's padded prefill per bucket.
    assert at_warm_up == 2 * 3 * 3 + 2 * 3
    again = [job(*spec) for spec in MIXED]
    results = run(graphed, again)
    assert all(same(results[id(b)], eager[id(a)]) for a, b in zip(jobs, again, strict=True))
    assert len(graphed.stepper.graphs) == at_warm_up, "nothing was captured while serving"
    assert captured and any(step.replays for step in captured)
    steps = {key[1] for key in graphed.stepper.graphs.graphs if len(key) == 3}
    assert steps <= {1, 2, 4}, "three rows ran padded to a bucket of four"
    prefills = {key for key in graphed.stepper.graphs.graphs if len(key) == 4}
    assert ("semantic", "prefill", 4, 257) in prefills, "three rows joined in one prefill, padded to four"
    assert ("coarse", "prefill", 1, 887) in prefills, "coarse windows padded to the longest prompt"


def test_a_failed_capture_runs_that_shape_eagerly_and_keeps_the_others_graphed(
    engine: BarkEngine, rows: BarkRowEngine, monkeypatch: pytest.MonkeyPatch
):
    jobs = [job(*spec) for spec in MIXED]
    eager = run(rows, jobs)
    graphed = TokenRows(engine, max_rows=8)
    fake_graphs(graphed, monkeypatch, failing=lambda key: key[:2] == ("coarse", 4))
    before = metrics.DECODER_FALLBACKS.labels(reason="capture_failed")._value.get()
    again = [job(*spec) for spec in MIXED]
    results = run(graphed, again)
    assert all(same(results[id(b)], eager[id(a)]) for a, b in zip(jobs, again, strict=True))
    failed = graphed.stepper.graphs.eager_shapes
    assert failed and all(key[:2] == ("coarse", 4) for key in failed)
    assert any(key[0] == "semantic" for key in graphed.stepper.graphs.graphs), "other shapes kept their graphs"
    assert metrics.DECODER_FALLBACKS.labels(reason="capture_failed")._value.get() == before + len(failed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_graphs_give_the_eager_tokens(tiny_checkpoint: Path):
    """On CUDA (fp32): rows stepped by captured graphs get the tokens of the same rows stepped eagerly."""
    settings = Settings(model_dir=tiny_checkpoint, device="cuda", dtype="float32", decoder="cudagraph", warmup=False)
    cuda_engine = BarkEngine(settings)
    graphed = TokenRows(cuda_engine, max_rows=4)
    assert graphed.stepper.use_cuda_graphs and graphed.capture_graphs() > 0
    eager = TokenRows(cuda_engine, max_rows=4)
    eager.stepper.use_cuda_graphs = False
    mix = [(TEXTS[i], f"v2/en_speaker_{i}", Sampling(seed=i) if i else GREEDY, BUDGETS[i]) for i in range(3)]
    first = [job(*spec) for spec in mix]
    second = [job(*spec) for spec in mix]
    expected, got = run(eager, first), run(graphed, second)
    assert [got[id(b)][:2] for b in second] == [expected[id(a)][:2] for a in first]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_continuous_loop_replayed_as_graphs_gives_the_eager_tokens(tiny_checkpoint: Path):
    """On CUDA in fp16, as served: rows of mixed voices, seeds and lengths, some joining mid-flight,
    stepped and prefilled by captured graphs get the tokens of the same shapes run eagerly."""
    settings = Settings(model_dir=tiny_checkpoint, device="cuda", dtype="float16", decoder="cudagraph", warmup=False)
    cuda_engine = BarkEngine(settings)
    graphed = TokenRows(cuda_engine, max_rows=8)
    assert graphed.capture_graphs() > 0
    mix = [(TEXTS[i % 3], f"v2/en_speaker_{i}", Sampling(seed=i) if i % 2 else GREEDY, 20 + 7 * i) for i in range(6)]
    first = [job(*spec) for spec in mix]
    got = run(graphed, first[:3], joining={9: first[3:]})
    assert not graphed.stepper.graphs.eager_shapes
    assert any(len(key) == 4 for key in graphed.stepper.graphs.graphs), "prefills were captured too"
    eager = TokenRows(cuda_engine, max_rows=8)
    eager.stepper.use_cuda_graphs = False
    second = [job(*spec) for spec in mix]
    expected = run(eager, second[:3], joining={9: second[3:]})
    assert [got[id(a)][:2] for a in first] == [expected[id(b)][:2] for b in second]


def test_the_setting_picks_the_scheduler_and_the_continuous_one_serves_seeded_audio_alone_or_not(
    engine: BarkEngine,
):
    """BARK_SCHEDULER chooses in one place; through the continuous scheduler a seeded request's audio
    is the same alone and among concurrent requests of other voices and settings."""
    import asyncio

    from model_server.generation.continuous.loop import ContinuousScheduler
    from model_server.generation.scheduler import Scheduler
    from model_server.generation.scheduler_choice import build_scheduler

    def never(key: object, payloads: list) -> list:
        raise AssertionError("the continuous scheduler does not run whole batches")

    static = build_scheduler(Settings(model_dir=Path("."), scheduler="static", warmup=False), never, engine)
    assert isinstance(static, Scheduler)
    continuous = build_scheduler(Settings(model_dir=Path("."), max_batch_size=4, warmup=False), never, engine)
    assert isinstance(continuous, ContinuousScheduler)
    seeded = ("v2/en_speaker_4", Sampling(seed=77, semantic_temperature=0.9))
    chunks = [SimpleNamespace(text="First part of it.", budget=20), SimpleNamespace(text="And more.", budget=14)]

    async def scenario():
        alone = await continuous.submit(seeded, chunks)
        together = await asyncio.gather(
            continuous.submit(("v2/en_speaker_0", Sampling()), [SimpleNamespace(text="Other words.", budget=25)]),
            continuous.submit(seeded, chunks),
            continuous.submit((None, GREEDY), [SimpleNamespace(text="Greedy one.", budget=18)] * 3),
        )
        await continuous.close()
        return alone, together[1]

    alone, together = asyncio.run(scenario())
    assert len(alone) == 2 and all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))


def test_out_of_memory_mid_flight_retries_the_rows_from_scratch_with_the_same_audio(
    engine: BarkEngine, monkeypatch: pytest.MonkeyPatch
):
    """A real row engine behind the continuous scheduler: an out-of-memory step with three active
    rows evicts them, the limit halves, and every request still gets the audio it gets alone."""
    import asyncio

    from model_server.generation.continuous.loop import ContinuousScheduler

    requests = [
        (("v2/en_speaker_1", Sampling(seed=5)), [SimpleNamespace(text="One two three.", budget=16)]),
        (("v2/en_speaker_2", Sampling(seed=6)), [SimpleNamespace(text="Four five six.", budget=20)]),
        ((None, GREEDY), [SimpleNamespace(text="Seven eight.", budget=12)]),
    ]

    def serve(rows: BarkRowEngine) -> tuple[list, int]:
        scheduler = ContinuousScheduler(rows, max_batch_size=4, max_queue_chunks=16)

        async def scenario():
            results = await asyncio.gather(*(scheduler.submit(key, chunks) for key, chunks in requests))
            limit = scheduler.active_limit
            await scheduler.close()
            return results, limit

        return asyncio.run(scenario())

    expected, _ = serve(TokenRows(engine, max_rows=4))
    flaky = TokenRows(engine, max_rows=4)
    real_step = flaky.stepper.step
    failures = []

    sizes_after: list[int] = []

    def step(stage, rows, highest_position):  # type: ignore[no-untyped-def]
        if rows > 2 and not failures:
            failures.append(rows)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        if failures:
            sizes_after.append(rows)
        return real_step(stage, rows, highest_position)

    monkeypatch.setattr(flaky.stepper, "step", step)
    results, _ = serve(flaky)
    assert failures == [3]
    assert sizes_after and max(sizes_after) == 1, "after the failure the active limit was 3 // 2 rows"
    assert all(same(a[0], b[0]) for a, b in zip(results, expected, strict=True))


def test_rows_entering_coarse_or_reaching_a_window_together_share_one_prefill(
    engine: BarkEngine, monkeypatch: pytest.MonkeyPatch
):
    """Issue #21: coarse windows used to be re-prefilled one row at a time."""
    rows = TokenRows(engine, max_rows=8)
    calls: list[tuple[str, int]] = []
    real_prefill = rows.stepper.prefill

    def prefill(stage, slots, prompts):  # type: ignore[no-untyped-def]
        calls.append((stage, len(slots)))
        return real_prefill(stage, slots, prompts)

    monkeypatch.setattr(rows.stepper, "prefill", prefill)
    same_length = [job(f"Voice {i} says this.", f"v2/en_speaker_{i}", Sampling(seed=i), 40) for i in range(3)]
    results = run(rows, same_length)
    coarse_calls = [count for stage, count in calls if stage == "coarse"]
    # 40 semantic tokens -> 120 coarse tokens: a first window and a second, each for all three at once.
    assert coarse_calls == [3, 3]
    assert calls[0] == ("semantic", 3)
    for single in same_length:  # and each got what it gets alone
        assert same(alone(rows, *single.spec), results[id(single)])


def test_with_flash_attn_the_step_reads_each_rows_own_length_and_gives_the_sdpa_tokens(
    engine: BarkEngine, rows: BarkRowEngine, monkeypatch: pytest.MonkeyPatch
):
    """BARK_ATTENTION=flash_attention_2: the continuous step calls `flash_attn_with_kvcache` with per-row
    cache lengths (the CPU stand-in has its semantics), needs no key-range buckets, and decodes what SDPA does."""
    from tests import flash_attn_standin

    jobs = [job(*spec) for spec in MIXED]
    expected = run(rows, jobs)
    flash = TokenRows(engine, max_rows=8)
    flash.stepper.flash_attn_with_kvcache = flash_attn_standin.flash_attn_with_kvcache
    fake_graphs(flash, monkeypatch)
    flash_attn_standin.CALLS.clear()
    again = [job(*spec) for spec in MIXED]
    got = run(flash, again)
    assert [got[id(b)][:2] for b in again] == [expected[id(a)][:2] for a in jobs]
    layers = len(flash.stepper.stages["semantic"].weights.layers)
    assert flash_attn_standin.CALLS["flash_attn_with_kvcache"] >= layers * 20
    assert {key[2] for key in flash.stepper.graphs.graphs if len(key) == 3} == {0}, "one graph per rows bucket"
