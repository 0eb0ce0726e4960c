"""Speaker prompts as data: every bad upload is a 400 naming what is wrong; good ones round-trip exactly."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bark_common.errors import InvalidInput
from model_server.generation.speaker_prompt import SpeakerPrompt, read_npz
from tests.voice_files import BAD, LIMITS, MAX_BYTES, bark_arrays, savez

FIELD = "file"


def read(data: bytes) -> SpeakerPrompt:
    return read_npz(data, LIMITS, MAX_BYTES, FIELD)


def test_the_limits_are_barks() -> None:
    assert (LIMITS.semantic_vocab, LIMITS.codebook_size, LIMITS.n_coarse, LIMITS.n_fine) == (10_000, 1024, 2, 8)
    # What Bark reads of a prompt: v2/en_speaker_0 is exactly this size.
    assert (LIMITS.keep_semantic, LIMITS.keep_frames) == (341, 512)
    assert (LIMITS.max_semantic, LIMITS.max_frames) == (768, 1155)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_file_saved_as_bark_saves_its_presets_reads_back_exactly(compressed: bool) -> None:
    arrays = bark_arrays()
    prompt = read(savez(arrays, compressed))
    for key, array in prompt.arrays().items():
        assert array.dtype == np.int64
        np.testing.assert_array_equal(array, arrays[key])


def test_the_same_tokens_always_make_the_same_file_which_numpy_and_we_read_back() -> None:
    first, second = SpeakerPrompt.of(*bark_arrays().values()), SpeakerPrompt.of(*bark_arrays().values())
    assert first.to_npz() == second.to_npz() and first.digest == second.digest
    with np.load(io.BytesIO(first.to_npz()), allow_pickle=False) as loaded:
        assert sorted(loaded.files) == ["coarse_prompt", "fine_prompt", "semantic_prompt"]
        np.testing.assert_array_equal(loaded["coarse_prompt"], first.coarse)
    assert read(first.to_npz()).digest == first.digest
    assert SpeakerPrompt.of(*bark_arrays(seed=1).values()).digest != first.digest


def test_the_cut_keeps_the_end_of_a_long_prompt_in_barks_ratio() -> None:
    long = SpeakerPrompt.of(*bark_arrays(tokens=700, frames=1052).values())
    cut = long.cut(LIMITS)
    assert (cut.semantic.shape, cut.coarse.shape, cut.fine.shape) == ((341,), (2, 512), (8, 512))
    np.testing.assert_array_equal(cut.semantic, long.semantic[-341:])
    np.testing.assert_array_equal(cut.fine, long.fine[:, -512:])
    cut.check(LIMITS, FIELD)  # still a valid prompt (Bark's 1.5 frames per token)
    short = SpeakerPrompt.of(*bark_arrays(tokens=100, frames=150).values())
    assert short.cut(LIMITS) is short


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_every_bad_upload_is_a_400_that_names_the_field_and_the_problem(case: str) -> None:
    make, expected = BAD[case]
    with pytest.raises(InvalidInput) as raised:
        read(make())
    assert raised.value.param == FIELD
    message = str(raised.value)
    assert message.startswith(f"{FIELD}: ") and expected in message, message
