"""A dialogue through the real continuous scheduler on the tiny checkpoint (CPU): every turn's chunks
go to the engine together, and each turn cut out of the dialogue by its segments' times is, sample for
sample, the audio of the same text, voice and seed asked for alone (greedy and seeded)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from model_server.config import Settings
from model_server.generation.engine import BarkEngine
from model_server.schema import SynthesisRequest
from model_server.synthesis import Synthesis, SynthesisService

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

#: Two voices, a language override, and turns of one and of several chunks (batch_chunk_size 3).
TURNS: list[dict[str, Any]] = [
    {"voice": "v2/en_speaker_1", "text": "Hello there. How are you?"},
    {"voice": "v2/de_speaker_3", "text": "Guten Tag. Mir geht es gut."},
    {"voice": "v2/en_speaker_1", "text": "Glad to hear it."},
    {"voice": "v2/de_speaker_3", "text": "Thank you, friend.", "language": "en"},
]
SAMPLING = {
    "greedy": {"do_sample": False},
    "seeded": {"do_sample": True, "seed": 4242, "semantic_temperature": 0.9, "fine_temperature": 0.6},
}


def service_over(engine: BarkEngine) -> SynthesisService:
    """The real service and continuous scheduler over the module's engine, with short chunk budgets."""
    settings = Settings(
        model_dir=engine.settings.model_dir,
        device="cpu",
        warmup=False,
        max_batch_size=16,
        semantic_tokens_per_word=6,
        semantic_tokens_min=12,
    )
    return SynthesisService(settings, engine)


def run(service: SynthesisService, requests: Sequence[SynthesisRequest]) -> list[Synthesis]:
    """Each request alone, one after another, then the scheduler's thread stops."""

    async def scenario() -> list[Synthesis]:
        try:
            return [await service.synthesize(request) for request in requests]
        finally:
            await service.close()

    return asyncio.run(scenario())


def turn_audio(result: Synthesis, turn: int, sample_rate: int) -> np.ndarray:
    """Turn `turn` cut out of the dialogue by its first segment's start and its last one's end."""
    segments = [segment for segment in result.segments if segment.turn == turn]
    start, end = round(segments[0].start_s * sample_rate), round(segments[-1].end_s * sample_rate)
    return result.waveform[start:end]


@pytest.mark.parametrize("mode", sorted(SAMPLING))
def test_each_turn_cut_from_the_dialogue_is_the_same_request_alone(engine: BarkEngine, mode: str):
    service = service_over(engine)
    common = {"batch_chunk_size": 3, **SAMPLING[mode]}
    dialogue = SynthesisRequest(turns=TURNS, timestamps=True, **common)
    alone = [
        SynthesisRequest(prompt=turn["text"], voice=turn["voice"], language=turn.get("language"), **common)
        for turn in TURNS
    ]
    together, *solo = run(service, [dialogue, *alone])
    assert together.chunks == sum(result.chunks for result in solo) > len(TURNS), "some turn has several chunks"
    for index, result in enumerate(solo):
        cut = turn_audio(together, index, service.sample_rate)
        assert np.array_equal(cut, result.waveform), f"turn {index} differs from the same request alone"


def test_all_turns_chunks_are_admitted_to_the_engine_together(engine: BarkEngine, monkeypatch: pytest.MonkeyPatch):
    service = service_over(engine)
    rows: Any = service.scheduler._engine  # type: ignore[attr-defined]
    admitted: list[list[str]] = []
    admit = rows.admit

    def recording_admit(jobs: Sequence[Any]) -> Any:
        admitted.append([job.key[0] for job in jobs])
        return admit(jobs)

    monkeypatch.setattr(rows, "admit", recording_admit)
    (result,) = run(service, [SynthesisRequest(turns=TURNS, do_sample=False, batch_chunk_size=3)])
    assert len(admitted[0]) == result.chunks, "every chunk of every turn joined the first step"
    assert set(admitted[0]) == {"v2/en_speaker_1", "v2/de_speaker_3"}


def test_with_the_static_scheduler_each_turn_runs_under_its_own_voice_and_the_times_are_exact():
    """The stub engine gives one sample per character, so every time is known: chunks of one turn are
    `pause_ms` apart, turns `turn_pause_ms`, and each voice's chunks ran in a batch of that voice."""
    from tests.stub_engine import SAMPLE_RATE, StubEngine, stub_service

    settings = Settings(warmup=False, max_wait_ms=1, pause_ms=100)
    engine = StubEngine(settings)
    request = SynthesisRequest(
        turns=[
            {"voice": "v2/en_speaker_0", "text": "First one. Second one."},
            {"voice": "v2/en_speaker_1", "text": "Third."},
        ],
        turn_pause_ms=250,
        batch_chunk_size=3,
        timestamps=True,
    )

    async def scenario() -> Synthesis:
        service = stub_service(settings, engine)
        try:
            return await service.synthesize(request)
        finally:
            await service.close()

    result = asyncio.run(scenario())
    texts = ["First one.", "Second one.", "Third."]
    assert sorted(map(sorted, engine.calls)) == [["First one.", "Second one."], ["Third."]], "a batch per voice"
    pause, turn_pause = SAMPLE_RATE // 10, SAMPLE_RATE // 4
    starts = [0, len(texts[0]) + pause, len(texts[0]) + pause + len(texts[1]) + turn_pause]
    assert [round(s.start_s * SAMPLE_RATE) for s in result.segments] == starts
    assert [round(s.end_s * SAMPLE_RATE) for s in result.segments] == [
        a + len(t) for a, t in zip(starts, texts, strict=True)
    ]
    assert len(result.waveform) == starts[-1] + len(texts[-1])
    assert [(s.turn, s.voice, s.chunk) for s in result.segments] == [
        (0, "v2/en_speaker_0", 0),
        (0, "v2/en_speaker_0", 1),
        (1, "v2/en_speaker_1", 2),
    ]
