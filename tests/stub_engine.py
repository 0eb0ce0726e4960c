"""A stand-in for BarkEngine, for testing BarkTTS's request and batch paths without weights.

Faults (an out-of-memory over a batch size, an error on a marked text) are injected here, in the
test process, so the server itself needs no fault-injection switch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from model_server.config import Settings
from model_server.generation.engine import BatchOutput, Sampling
from model_server.generation.scheduler import BatchRunner, Scheduler
from model_server.generation.speaker_prompt import SpeakerPrompt
from model_server.model import BarkTTS
from model_server.synthesis import SynthesisService
from tests.voice_files import LIMITS

SAMPLE_RATE = 24_000


class StubVoices:
    names = ("v2/en_speaker_0", "v2/en_speaker_1")

    def resolve(self, voice: str, field: str = "voice") -> str:
        return voice

    def check(self, voice: str, field: str = "voice") -> None:
        """Every voice is known here."""


class StubEngine:
    """Returns, for each text, a waveform of one sample per character; faults on demand."""

    def __init__(self, settings: Settings, oom_above: int | None = None, explode_on: str | None = None):
        self.settings = settings
        self.device = torch.device("cpu")
        self.sample_rate = SAMPLE_RATE
        self.max_semantic_tokens = 768  # the hub checkpoints' semantic max_new_tokens
        self.voices = StubVoices()
        # Bark's layout (bark-small and bark alike).
        self.prompt_limits = LIMITS
        self.oom_above = oom_above
        self.explode_on = explode_on
        self.calls: list[list[str]] = []

    def semantic_budget(self, words: int) -> int:
        return max(self.settings.semantic_tokens_min, math.ceil(words * self.settings.semantic_tokens_per_word))

    def generate_batch(
        self,
        texts: Sequence[str],
        voice: str | None,
        sampling: Sampling,
        budgets: Sequence[int],
        prompt: SpeakerPrompt | None = None,
    ) -> BatchOutput:
        self.calls.append(list(texts))
        if self.oom_above is not None and len(texts) > self.oom_above:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (stub: batch of {len(texts)})")
        if self.explode_on is not None and any(self.explode_on in text for text in texts):
            raise RuntimeError("stub engine failure")
        return BatchOutput(waveforms=[np.full(len(text), 0.1, dtype=np.float32) for text in texts])


def static_scheduler(settings: Settings, run_batch: BatchRunner, engine: object, on_fatal: object = None) -> Scheduler:
    """The static scheduler, as the stub engine has no row-stepping weights for the continuous one
    (and no device to fail for good, so `on_fatal` is never called)."""
    return Scheduler(
        run_batch,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue_chunks=settings.max_queue_chunks,
    )


def stub_service(settings: Settings, engine: StubEngine) -> SynthesisService:
    """The synthesis service over `engine`, with a real scheduler (create it inside a running event loop)."""
    return SynthesisService(settings, engine, static_scheduler)  # type: ignore[arg-type]


def stub_model(settings: Settings, engine: StubEngine) -> BarkTTS:
    """A ready BarkTTS over `engine` (create it inside a running event loop)."""
    model = BarkTTS(settings, stub_service(settings, engine))
    model.ready = True
    return model
