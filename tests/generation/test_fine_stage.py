"""The continuous loop's fine stage (continuous/fine.py): transformers' windows, per-row sampling,
the same codes alone or in a group of any voices, lengths and settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from model_server.config import Settings
from model_server.generation.continuous.bark_rows import BarkRowEngine
from model_server.generation.continuous.fine import FineRow, _choose, generate_fine
from model_server.generation.engine import BarkEngine, Sampling
from tests.generation.row_runs import run_rows

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

GREEDY = Sampling(do_sample=False)


def coarse_codes(frames: int, seed: int, codebook_size: int) -> torch.Tensor:
    return torch.randint(0, codebook_size, (frames, 2), generator=torch.Generator().manual_seed(seed))


def fine_row(engine: BarkEngine, frames: int, voice: str | None, temperature: float | None, seed: int) -> FineRow:
    history = engine.voices.prompt(voice)["fine_prompt"].T if voice else None
    return FineRow(coarse_codes(frames, seed, engine.codebook_size), history, temperature, seed)


def ours(engine: BarkEngine, rows: list[FineRow]) -> list[torch.Tensor]:
    return generate_fine(engine.model.fine_acoustics, rows, engine._configs(GREEDY, 30)[2], engine.codebook_size)


@pytest.mark.parametrize(
    ("frames", "voice"),
    [
        (40, "v2/en_speaker_0"),  # shorter than one window with its history: padded
        (700, "v2/en_speaker_1"),  # two windows
        (1300, "v2/en_speaker_2"),  # four windows
        (300, None),  # no voice, no history
        (1100, None),  # no voice, two windows
    ],
)
def test_greedy_codes_equal_transformers_fine_generate(engine: BarkEngine, frames: int, voice: str | None) -> None:
    semantic, coarse, fine = engine._configs(GREEDY, 30)
    row = fine_row(engine, frames, voice, None, seed=frames)
    # The coarse model's own token ids: the two codebooks interleaved, past the semantic vocabulary.
    offsets = torch.tensor([0, engine.codebook_size]) + semantic.semantic_vocab_size
    expected = engine.model.fine_acoustics.generate(
        (row.coarse + offsets).reshape(1, -1),
        history_prompt=engine.voices.prompt(voice) if voice else None,
        semantic_generation_config=semantic,
        coarse_generation_config=coarse,
        fine_generation_config=fine,
        codebook_size=engine.codebook_size,
    )
    (codes,) = ours(engine, [row])
    assert codes.shape == (8, frames)
    assert torch.equal(codes, expected[0])
    assert torch.equal(codes[:2], row.coarse.T), "the coarse codebooks pass through"


def test_a_group_of_any_voices_lengths_and_settings_gives_each_row_its_codes_alone(engine: BarkEngine) -> None:
    rows = [
        fine_row(engine, 40, "v2/en_speaker_0", 0.5, seed=1),
        fine_row(engine, 700, "v2/en_speaker_1", None, seed=2),
        fine_row(engine, 900, None, 0.7, seed=3),
        fine_row(engine, 1300, "v2/en_speaker_2", 0.5, seed=4),
        fine_row(engine, 120, "v2/en_speaker_3", 1.0, seed=5),
    ]
    alone = [ours(engine, [row])[0] for row in rows]
    together = ours(engine, rows)
    assert all(torch.equal(group, single) for group, single in zip(together, alone, strict=True))
    assert [codes.shape[1] for codes in together] == [40, 700, 900, 1300, 120]


def test_sampling_follows_the_seed_and_temperature_one_is_greedy(engine: BarkEngine) -> None:
    base = fine_row(engine, 300, "v2/en_speaker_4", 0.5, seed=11)
    sampled = ours(engine, [base])[0]
    assert torch.equal(ours(engine, [base])[0], sampled), "the same seed draws the same codes"
    other_seed = ours(engine, [FineRow(base.coarse, base.history, 0.5, 12)])[0]
    greedy = ours(engine, [FineRow(base.coarse, base.history, None, 11)])[0]
    assert (other_seed != sampled).any() and (greedy != sampled).any()
    # transformers decodes greedily at temperature 1.0, sampling or not: so do we.
    assert torch.equal(ours(engine, [FineRow(base.coarse, base.history, 1.0, 11)])[0], greedy)


def test_inverse_cdf_draws_follow_the_softmax_at_the_rows_temperature() -> None:
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4])
    # softmax(logits / 0.5) == probabilities; an extra code past the codebook is never drawn.
    logits = torch.cat([probabilities.log() * 0.5, torch.tensor([50.0])]).expand(2, 20_000, 5)
    codes = _choose(logits, [0.5, None], keys=[123, 456], codebook_size=4)
    frequencies = torch.bincount(codes[0], minlength=4).float() / codes.shape[1]
    torch.testing.assert_close(frequencies, probabilities, atol=0.015, rtol=0)
    assert torch.equal(codes[1], torch.full((20_000,), 3)), "a greedy row takes the argmax"


def test_the_row_engine_groups_rows_that_finish_together_and_keeps_failures_apart(engine: BarkEngine) -> None:
    rows = BarkRowEngine(engine, max_rows=4)
    rows.finisher.group = True  # as on CUDA
    jobs = [
        SimpleNamespace(
            key=(voice, Sampling(seed=index)), payload=SimpleNamespace(text="Same length.", budget=16), seed=None
        )
        for index, voice in enumerate(["v2/en_speaker_0", "v2/en_speaker_1", None])
    ]

    def run(row_engine: BarkRowEngine, batch: list[SimpleNamespace]) -> dict[int, object]:
        return run_rows(row_engine, batch, errors_allowed=True)

    passes: list[int] = []
    fine_pass = rows._fine_pass

    def counted(group: list[FineRow]) -> list[torch.Tensor]:
        passes.append(len(group))
        return fine_pass(group)

    rows._fine_pass = counted  # type: ignore[method-assign]
    grouped = run(rows, jobs)
    assert passes == [3], "the three rows finished in the same step and shared one pass"
    for job in jobs:
        job.seed = None
        alone = run(rows, [job])[id(job)]
        assert (alone == grouped[id(job)]).all()  # type: ignore[union-attr]

    def failing(group: list[FineRow]) -> list[torch.Tensor]:
        if any(item.history is None for item in group):
            raise RuntimeError("this row's fine stage failed")
        return fine_pass(group)

    rows._fine_pass = failing  # type: ignore[method-assign]
    for job in jobs:
        job.seed = None
    outcomes = run(rows, jobs)
    assert isinstance(outcomes[id(jobs[2])], RuntimeError)
    assert all((outcomes[id(job)] == grouped[id(job)]).all() for job in jobs[:2])  # type: ignore[union-attr]

    passes.clear()

    def out_of_memory_when_grouped(group: list[FineRow]) -> list[torch.Tensor]:
        passes.append(len(group))
        if len(group) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test: the group is too big)")
        return fine_pass(group)

    rows._fine_pass = out_of_memory_when_grouped  # type: ignore[method-assign]
    for job in jobs:
        job.seed = None
    outcomes = run(rows, jobs)
    assert passes == [3, 1, 1, 1], "a group too big for memory runs again row by row"
    assert all((outcomes[id(job)] == grouped[id(job)]).all() for job in jobs)  # type: ignore[union-attr]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fine_pass_matches_transformers_and_batches(tiny_checkpoint: Path) -> None:
    cuda = BarkEngine(Settings(model_dir=tiny_checkpoint, device="cuda", dtype="float32", warmup=False))
    semantic, coarse, fine = cuda._configs(GREEDY, 30)
    rows = [
        fine_row(cuda, frames, voice, None, seed)
        for seed, (frames, voice) in enumerate([(700, "v2/en_speaker_1"), (300, None)])
    ]
    rows = [
        FineRow(row.coarse.cuda(), None if row.history is None else row.history.cuda(), None, row.seed) for row in rows
    ]
    offsets = torch.tensor([0, cuda.codebook_size], device="cuda") + semantic.semantic_vocab_size
    for row in rows:
        expected = cuda.model.fine_acoustics.generate(
            (row.coarse + offsets).reshape(1, -1),
            history_prompt=None if row.history is None else {"fine_prompt": row.history.T},
            semantic_generation_config=semantic,
            coarse_generation_config=coarse,
            fine_generation_config=fine,
            codebook_size=cuda.codebook_size,
        )
        assert torch.equal(ours(cuda, [row])[0], expected[0])
    together = ours(cuda, rows)
    for group, row in zip(together, rows, strict=True):
        # Batched kernels may round differently from single-row ones: near-ties can flip a few codes.
        assert (group == ours(cuda, [row])[0]).float().mean() > 0.99
