"""The loop as rewritten for the GPU (issue #21) gives the tokens and audio recorded before it.

`reference_rows.py` recorded ten chunks (greedy and seeded, mixed voices and temperatures, no voice,
several coarse windows), each run alone through the per-row loop as it was. The device-resident,
one-graph-per-step, read-one-step-late loop must give each of them the same semantic, coarse and fine
tokens and the same waveform, alone, all together with unseeded mates, and joining mid-flight.
"""

from __future__ import annotations

import numpy as np
import pytest

from model_server.generation.continuous.bark_rows import BarkRowEngine
from model_server.generation.engine import BarkEngine, Sampling
from tests.generation.reference_rows import SPECS, RecordingRows, Reference, Spec, job, load
from tests.generation.row_runs import run_rows as run

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def assert_matches(got: object, expected: Reference) -> None:
    assert isinstance(got, Reference)
    assert got.semantic.tolist() == expected.semantic.tolist()
    assert got.coarse.tolist() == expected.coarse.tolist()
    assert np.array_equal(got.fine, expected.fine)
    # Bitwise equal on the machine that recorded it; a little slack for another CPU's float kernels.
    np.testing.assert_allclose(got.audio, expected.audio, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def references() -> list[Reference]:
    return load()


@pytest.fixture()
def rows(engine: BarkEngine) -> BarkRowEngine:
    return RecordingRows(engine, max_rows=16)


def test_each_reference_row_alone_gives_its_recorded_tokens_and_audio(rows: BarkRowEngine, references):
    for spec, expected in zip(SPECS, references, strict=True):
        single = job(spec)
        assert_matches(run(rows, [single])[id(single)], expected)


def test_all_reference_rows_together_with_unseeded_mates_give_their_recorded_outputs(rows: BarkRowEngine, references):
    jobs = [job(spec) for spec in SPECS]
    mates = [job(Spec(f"An unseeded mate number {n}.", f"v2/en_speaker_{n}", Sampling(), 15 + 9 * n)) for n in range(3)]
    outcomes = run(rows, [mates[0], *jobs[:5], mates[1], *jobs[5:], mates[2]])
    for single, expected in zip(jobs, references, strict=True):
        assert_matches(outcomes[id(single)], expected)


def test_reference_rows_joining_mid_flight_give_their_recorded_outputs(rows: BarkRowEngine, references):
    """Rows join while others are in their semantic stage, in coarse, and between windows."""
    jobs = [job(spec) for spec in SPECS]
    outcomes = run(rows, jobs[:3], joining={7: jobs[3:5], 31: jobs[5:8], 64: jobs[8:]})
    for single, expected in zip(jobs, references, strict=True):
        assert_matches(outcomes[id(single)], expected)
