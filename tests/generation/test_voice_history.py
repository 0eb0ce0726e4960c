"""A chunk's history as data, through the real row engine on the tiny checkpoint (CPU).

A prompt brought with a chunk (a custom voice) is read exactly as the same arrays served as a preset;
a kept chunk hands back its own tokens in Bark's preset layout; cutting a prompt to what Bark reads
changes no token; and a kept voice, used again, is the row's history.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model_server.generation.continuous.bark_rows import BarkRowEngine
from model_server.generation.engine import BarkEngine, Sampling
from model_server.generation.speaker_prompt import KeptChunk, SpeakerPrompt
from model_server.generation.voices import CUSTOM_KEY, TOKENS_KEY
from tests.generation.row_runs import run_rows

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SEEDED = Sampling(do_sample=True, seed=77, semantic_temperature=0.9)
GREEDY = Sampling(do_sample=False)
TEXT = "Hello there, how are you today?"


class HistoryRows(BarkRowEngine):
    """Records each row's history as it was admitted, and hands back its tokens and audio."""

    def __init__(self, engine: BarkEngine):
        super().__init__(engine, max_rows=4)
        self.histories: dict[int, dict[str, np.ndarray] | None] = {}

    def _row(self, job):  # type: ignore[no-untyped-def]
        row = super()._row(job)
        history = row.history
        self.histories[id(job)] = None if history is None else {k: v.cpu().numpy() for k, v in history.items()}
        return row

    def _finish(self, row, fine):  # type: ignore[no-untyped-def]
        plan = row.coarse
        return (tuple(row.semantic), tuple(plan.tokens[plan.history_length :]), super()._finish(row, fine))


@pytest.fixture()
def rows(engine: BarkEngine) -> HistoryRows:
    return HistoryRows(engine)


def job(voice: str | None, sampling: Sampling, history: SpeakerPrompt | None = None, keep: bool = False, budget=24):
    payload = SimpleNamespace(text=TEXT, budget=budget, history=history, keep_tokens=keep)
    return SimpleNamespace(key=(voice, sampling), payload=payload, seed=None)


def preset_prompt(engine: BarkEngine, name: str) -> SpeakerPrompt:
    """A preset's arrays, as an uploaded voice would hold them."""
    tensors = engine.voices.prompt(name)
    return SpeakerPrompt.of(
        *(tensors[key].cpu().numpy() for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"))
    )


def outcome(rows: HistoryRows, single: SimpleNamespace) -> tuple:
    return run_rows(rows, [single])[id(single)]


def same(left: tuple, right: tuple) -> bool:
    audio = [item.waveform if isinstance(item, KeptChunk) else item for item in (left[2], right[2])]
    return left[:2] == right[:2] and np.array_equal(*audio)


@pytest.mark.parametrize("sampling", [SEEDED, GREEDY], ids=["seeded", "greedy"])
def test_a_prompt_brought_with_the_chunk_is_read_as_the_same_arrays_as_a_preset(rows, engine, sampling):
    prompt = preset_prompt(engine, "v2/en_speaker_3")
    as_preset = outcome(rows, job("v2/en_speaker_3", sampling))
    as_upload = outcome(rows, job(CUSTOM_KEY + prompt.digest, sampling, prompt))
    assert same(as_preset, as_upload)
    assert not same(as_preset, outcome(rows, job("v2/en_speaker_4", sampling))), "the history matters"


def test_a_kept_chunk_hands_back_its_own_tokens_in_the_layout_of_barks_presets(rows, engine):
    semantic, coarse, kept = outcome(rows, job("v2/en_speaker_1", SEEDED, keep=True, budget=40))
    assert isinstance(kept, KeptChunk) and len(kept.waveform)
    prompt = kept.prompt
    assert prompt.semantic.tolist() == list(semantic)
    frames = len(coarse) // 2
    assert prompt.coarse.shape == (2, frames) and prompt.fine.shape == (8, frames)
    # The coarse stage's ids (semantic vocab + codebook offset + code) back to codes, as the fine
    # stage read them: its own first two codebooks are exactly these codes.
    ids = np.array(coarse).reshape(frames, 2).T
    np.testing.assert_array_equal(ids[0], prompt.coarse[0] + 10_000)
    np.testing.assert_array_equal(prompt.fine[:2], prompt.coarse)
    assert prompt.coarse.min() >= 0 and prompt.coarse.max() < 1024
    prompt.check(engine.prompt_limits, "kept")  # a valid voice (Bark's 1.5 frames per token)


@pytest.mark.parametrize("sampling", [SEEDED, GREEDY], ids=["seeded", "greedy"])
def test_cutting_a_long_prompt_to_what_bark_reads_changes_no_token(rows, engine, sampling):
    rng = np.random.default_rng(3)
    long = SpeakerPrompt.of(
        rng.integers(0, 10_000, 700), rng.integers(0, 1024, (2, 1052)), rng.integers(0, 1024, (8, 1052))
    )
    cut = long.cut(engine.prompt_limits)
    assert cut.semantic.shape[0] < long.semantic.shape[0] and cut.coarse.shape[1] < long.coarse.shape[1]
    whole = outcome(rows, job(TOKENS_KEY + long.digest, sampling, long))
    assert same(whole, outcome(rows, job(TOKENS_KEY + cut.digest, sampling, cut)))


def test_a_kept_voice_used_again_is_the_rows_history(rows, engine):
    single = job(None, SEEDED, keep=True, budget=40)  # voice "random": no history at all
    _, _, kept = outcome(rows, single)
    assert rows.histories[id(single)] is None
    voice = kept.prompt.cut(engine.prompt_limits)
    again = job(CUSTOM_KEY + voice.digest, SEEDED, voice)
    outcome(rows, again)
    history = rows.histories[id(again)]
    assert history is not None
    for key, array in voice.arrays().items():
        np.testing.assert_array_equal(history[key], array)


def test_custom_voices_stay_on_the_device_and_one_off_histories_do_not(engine):
    prompt = preset_prompt(engine, "v2/en_speaker_5")
    first = engine.voices.history(CUSTOM_KEY + prompt.digest, prompt)
    assert engine.voices.history(CUSTOM_KEY + prompt.digest, prompt) is first
    once = engine.voices.history(TOKENS_KEY + prompt.digest, prompt)
    assert once is not first and all(torch.equal(once[key], first[key]) for key in first)
