"""Reference outputs of the continuous row engine, recorded before the GPU-loop rewrite (issue #21).

Each spec is one chunk: its text, voice, sampling and semantic budget. A row's tokens and audio are a
function of these alone (not of its batch mates or when it joined), so one recording of each spec,
run alone, is the contract every later version of the loop must meet, among any mates and joining
at any step (`test_reference_outputs.py`).

Recorded with `python -m tests.generation.reference_rows` on the tiny checkpoint (seed 0), CPU,
fp32, one torch thread: semantic, coarse and fine tokens exactly, and the waveform.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from model_server.generation.continuous.bark_rows import BarkRowEngine
from model_server.generation.engine import Sampling

DATA = Path(__file__).with_name("data") / "reference_rows.npz"

GREEDY = Sampling(do_sample=False)


@dataclass(frozen=True)
class Spec:
    text: str
    voice: str | None
    sampling: Sampling
    budget: int


SPECS: tuple[Spec, ...] = (
    Spec("Hello world.", "v2/en_speaker_3", GREEDY, 30),
    Spec("The quick brown fox jumps over the lazy dog again.", "v2/en_speaker_3", GREEDY, 20),
    Spec("Speech from a fast server", "v2/en_speaker_1", GREEDY, 40),
    Spec(
        "A seeded sentence to speak.",
        "v2/en_speaker_2",
        Sampling(semantic_temperature=0.8, coarse_temperature=0.6, fine_temperature=0.5, seed=1234),
        30,
    ),
    Spec("Other seed.", "v2/en_speaker_2", Sampling(seed=99), 25),
    Spec("Other voice, other temperature.", "v2/en_speaker_7", Sampling(semantic_temperature=1.2, seed=7), 35),
    Spec("No voice at all, seeded.", None, Sampling(coarse_temperature=0.4, seed=5), 25),
    Spec("Greedy without a voice.", None, GREEDY, 12),
    Spec("A longer chunk that runs several coarse windows in a row.", "v2/en_speaker_5", Sampling(seed=42), 70),
    Spec("Greedy, fine sampling off, a sixty token budget.", "v2/en_speaker_0", GREEDY, 60),
)


@dataclass(frozen=True)
class Reference:
    semantic: np.ndarray
    coarse: np.ndarray
    fine: np.ndarray
    audio: np.ndarray


class RecordingRows(BarkRowEngine):
    """The row engine, handing back each row's tokens with its waveform (what the recording holds)."""

    def _finish(self, row, fine):  # type: ignore[no-untyped-def]
        plan = row.coarse
        audio = super()._finish(row, fine)
        own = plan.tokens[plan.history_length :]
        return Reference(np.array(row.semantic), np.array(own), fine.cpu().numpy(), audio)


def job(spec: Spec) -> SimpleNamespace:
    """A row job for the row engine: the spec's text, voice, sampling and budget; no seed yet."""
    return SimpleNamespace(
        key=(spec.voice, spec.sampling), payload=SimpleNamespace(text=spec.text, budget=spec.budget), seed=None
    )


def load() -> list[Reference]:
    with np.load(DATA) as data:
        return [
            Reference(data[f"semantic_{i}"], data[f"coarse_{i}"], data[f"fine_{i}"], data[f"audio_{i}"])
            for i in range(len(SPECS))
        ]


def save(references: list[Reference], path: Path = DATA) -> None:
    arrays: dict[str, np.ndarray] = {}
    for index, reference in enumerate(references):
        arrays[f"semantic_{index}"] = reference.semantic.astype(np.int64)
        arrays[f"coarse_{index}"] = reference.coarse.astype(np.int64)
        arrays[f"fine_{index}"] = reference.fine.astype(np.int64)
        arrays[f"audio_{index}"] = reference.audio.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":  # pragma: no cover - run by hand against the code being recorded
    import tempfile

    import torch

    from model_server.config import Settings
    from model_server.generation.engine import BarkEngine
    from model_server.tiny import build_checkpoint
    from tests.generation.row_runs import run_rows

    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_checkpoint(Path(folder) / "tiny")
        engine = BarkEngine(Settings(model_dir=checkpoint, device="cpu", decoder="static", warmup=False))
        rows = RecordingRows(engine, max_rows=8)
        references = []
        for spec in SPECS:
            row_job = job(spec)
            outcome = run_rows(rows, [row_job])[id(row_job)]
            assert isinstance(outcome, Reference), outcome
            references.append(outcome)
        save(references, Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
        print("recorded", len(references), "rows; coarse tokens:", [len(r.coarse) for r in references])
