"""`continuity: "previous"` and `save_voice` through the real service, scheduler and row engine (CPU).

With continuity, chunk k's history is exactly chunk k-1's generated tokens (cut to what Bark reads),
each voice of a dialogue its own chain; seeded runs repeat. A `random` take kept twice is the same
`.npz` twice, valid as an upload, used as the history of a request that names it, and still there
after a restart.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bark_common.errors import InvalidInput
from model_server.callers import ANONYMOUS_CALLER
from model_server.config import Settings
from model_server.custom_voices import CustomVoices
from model_server.generation.continuous.bark_rows import BarkRowEngine
from model_server.generation.engine import BarkEngine
from model_server.generation.speaker_prompt import KeptChunk, SpeakerPrompt, read_npz
from model_server.schema import SynthesisRequest
from model_server.synthesis import Synthesis, SynthesisService
from tests.generation.test_dialogue import run

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TEXT = "One two three. Four five six. Seven eight nine."


class Recorder:
    """What the row engine saw: each chunk's history at admission and its outcome, by its text."""

    def __init__(self) -> None:
        self.histories: dict[str, dict[str, np.ndarray] | None] = {}
        self.outcomes: dict[str, Any] = {}
        self.order: list[str] = []


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    seen = Recorder()
    row, finish = BarkRowEngine._row, BarkRowEngine._finish

    def recording_row(self, job):  # type: ignore[no-untyped-def]
        made = row(self, job)
        history = made.history
        seen.histories[job.payload.text] = None if history is None else {k: v.cpu().numpy() for k, v in history.items()}
        seen.order.append(job.payload.text)
        return made

    def recording_finish(self, made, fine):  # type: ignore[no-untyped-def]
        result = finish(self, made, fine)
        seen.outcomes[made.job.payload.text] = result
        return result

    monkeypatch.setattr(BarkRowEngine, "_row", recording_row)
    monkeypatch.setattr(BarkRowEngine, "_finish", recording_finish)
    yield seen


def settings_for(engine: BarkEngine, store: Path | None = None, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "semantic_tokens_per_word": 8,
        "semantic_tokens_min": 40,  # 40 tokens: a chunk long enough to keep as a voice
        **overrides,
    }
    return Settings(
        model_dir=engine.settings.model_dir,
        device="cpu",
        warmup=False,
        voice_store=str(store or "unused"),
        voice_store_poll_s=0.05,
        **fields,
    )


def service_over(engine: BarkEngine, store: Path | None = None, **overrides: Any) -> SynthesisService:
    settings = settings_for(engine, store, **overrides)
    voices = CustomVoices.open(settings, engine) if store is not None else None
    return SynthesisService(settings, engine, voices=voices)


def arrays(prompt: SpeakerPrompt) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in prompt.arrays().items()}


def assert_history(history: dict[str, np.ndarray] | None, expected: dict[str, np.ndarray]) -> None:
    assert history is not None
    for key, array in expected.items():
        np.testing.assert_array_equal(history[key], array, err_msg=key)


def preset(engine: BarkEngine, name: str) -> dict[str, np.ndarray]:
    return {key: value.cpu().numpy() for key, value in engine.voices.prompt(name).items()}


def test_each_chunk_reads_the_tokens_the_chunk_before_it_made(engine, recorder):
    service = service_over(engine)
    request = SynthesisRequest(prompt=TEXT, voice="v2/en_speaker_2", batch_chunk_size=3, continuity="previous", seed=11)
    chunks = [chunk.text for chunk in service.plan(request).chunks]
    assert len(chunks) == 3
    run(service, [request])
    assert recorder.order == chunks, "one after another"
    assert_history(recorder.histories[chunks[0]], preset(engine, "v2/en_speaker_2"))
    for before, after in itertools.pairwise(chunks):
        made = recorder.outcomes[before]
        assert isinstance(made, KeptChunk)
        assert_history(recorder.histories[after], arrays(made.prompt.cut(engine.prompt_limits)))


def test_without_continuity_every_chunk_reads_the_preset(engine, recorder):
    service = service_over(engine)
    request = SynthesisRequest(prompt=TEXT, voice="v2/en_speaker_2", batch_chunk_size=3, seed=11)
    run(service, [request])
    for history in recorder.histories.values():
        assert_history(history, preset(engine, "v2/en_speaker_2"))
    assert not any(isinstance(outcome, KeptChunk) for outcome in recorder.outcomes.values())


def test_each_voice_of_a_dialogue_is_its_own_chain(engine, recorder):
    service = service_over(engine)
    turns = [
        {"voice": "v2/en_speaker_1", "text": "Hello there my friend."},
        {"voice": "random", "text": "Good day to you."},
        {"voice": "v2/en_speaker_1", "text": "How are things?"},
    ]
    request = SynthesisRequest(turns=turns, continuity="previous", do_sample=False)
    run(service, [request])
    assert_history(recorder.histories[turns[0]["text"]], preset(engine, "v2/en_speaker_1"))
    assert recorder.histories[turns[1]["text"]] is None, "random: no prompt for its first chunk"
    first = recorder.outcomes[turns[0]["text"]]
    assert_history(recorder.histories[turns[2]["text"]], arrays(first.prompt.cut(engine.prompt_limits)))


@pytest.mark.parametrize("sampling", [{"seed": 5}, {"do_sample": False}], ids=["seeded", "greedy"])
def test_continuity_runs_repeat(engine, sampling):
    request = SynthesisRequest(prompt=TEXT, voice="random", batch_chunk_size=3, continuity="previous", **sampling)
    first, second = run(service_over(engine), [request, request])
    assert first.chunks == 3 and np.array_equal(first.waveform, second.waveform)


@pytest.mark.parametrize("sampling", [{"seed": 1234}, {"do_sample": False}], ids=["seeded", "greedy"])
def test_a_random_take_kept_twice_is_the_same_file_and_a_voice_that_lasts(engine, recorder, tmp_path, sampling):
    service = service_over(engine, tmp_path)
    voices = service.voices
    take = {"prompt": "A brand new speaker says hello.", "voice": "random", **sampling}

    async def scenario() -> tuple[list[Synthesis], bytes, SpeakerPrompt]:
        try:
            takes = [
                await service.synthesize(SynthesisRequest(**take, save_voice={"name": name}))
                for name in ("kept-1", "kept-2")
            ]
            npz = voices.download(ANONYMOUS_CALLER, "kept-1")
            kept = read_npz(npz, engine.prompt_limits, len(npz), "file")  # uploads again as a valid voice
            voices.add(ANONYMOUS_CALLER, "uploaded-again", kept, "the same tokens, uploaded")
            # A request with the kept voice reads exactly the saved prompt as its history.
            await service.synthesize(SynthesisRequest(prompt="Speaking with my kept voice.", voice="kept-1", seed=3))
            return takes, npz, kept
        finally:
            await service.close()

    (first, second), npz, kept = asyncio.run(scenario())
    assert np.array_equal(first.waveform, second.waveform)
    assert first.chunks == 1 and isinstance(recorder.outcomes[take["prompt"]], KeptChunk)
    assert_history(recorder.histories["Speaking with my kept voice."], arrays(kept))
    # The voice survives a restart: a new service over the same store still has it, byte for byte.
    restarted = service_over(engine, tmp_path)
    try:
        names = {voice["name"] for voice in restarted.describe_voices()["voices"]}
        assert {"kept-1", "kept-2", "uploaded-again"} <= names
        assert restarted.voices.download(ANONYMOUS_CALLER, "kept-1") == npz
        assert restarted.voices.download(ANONYMOUS_CALLER, "kept-2") == npz, "the same take, the same file"
    finally:
        restarted.voices.close()


def test_a_first_chunk_too_short_to_be_a_voice_is_a_400_naming_save_voice(engine, tmp_path):
    service = service_over(engine, tmp_path, semantic_tokens_per_word=1, semantic_tokens_min=5)
    request = SynthesisRequest(prompt="Hi.", voice="random", seed=1, save_voice={"name": "too-short"})
    with pytest.raises(InvalidInput) as refused:
        run(service, [request])
    assert refused.value.param == "save_voice" and "fewer than the 20" in str(refused.value)
    assert not service.voices.catalog.records()  # type: ignore[union-attr]
