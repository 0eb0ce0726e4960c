"""Speaker prompt files for the tests: Bark-shaped arrays, `.npz` bytes, and every kind of bad upload."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import numpy as np
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkFineGenerationConfig,
    BarkSemanticGenerationConfig,
)

from model_server.generation.speaker_prompt import PromptLimits

#: The server's default `voice_max_bytes`.
MAX_BYTES = 512 * 1024
#: Bark's layout, from transformers' defaults (bark-small and bark share them).
LIMITS = PromptLimits.of(
    BarkSemanticGenerationConfig(), BarkCoarseGenerationConfig(), BarkFineGenerationConfig(), 1024, 768
)


def bark_arrays(tokens: int = 309, frames: int = 464, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays shaped and typed like Bark's `v2/en_speaker_6.npz` (309 tokens, 464 frames; fine int32)."""
    rng = np.random.default_rng(seed)
    return {
        "semantic_prompt": rng.integers(0, 10_000, tokens, dtype=np.int64),
        "coarse_prompt": rng.integers(0, 1024, (2, frames), dtype=np.int64),
        "fine_prompt": rng.integers(0, 1024, (8, frames), dtype=np.int32),
    }


def savez(arrays: dict[str, object], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)  # type: ignore[operator]
    return buffer.getvalue()


def _with(**changes: object) -> bytes:
    arrays: dict[str, object] = dict(bark_arrays())
    arrays.update(changes)
    return savez({key: value for key, value in arrays.items() if value is not None})


def _object_array() -> bytes:
    buffer = io.BytesIO()
    arrays = bark_arrays()
    np.savez(
        buffer,
        semantic_prompt=np.array([{"pickled": True}], dtype=object),
        **{key: value for key, value in arrays.items() if key != "semantic_prompt"},
    )
    return buffer.getvalue()


def zipped(arrays: dict[str, np.ndarray], change: Callable[[str, bytes], bytes] = lambda key, data: data) -> bytes:
    """An .npz written member by member (deflated), each member's bytes passed through `change` first."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array)
            archive.writestr(f"{key}.npy", change(key, member.getvalue()))
    return buffer.getvalue()


def _bomb() -> bytes:
    """A member that inflates far past any prompt (a zip bomb's shape), compressed to almost nothing."""
    return zipped({**bark_arrays(), "fine_prompt": np.zeros((8, 5_000_000), np.int8)})


BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "pickled object array": (_object_array, "pickled object array"),
    "float array": (lambda: _with(coarse_prompt=np.zeros((2, 464), np.float32)), "integer tokens, not float32"),
    "bool array": (lambda: _with(semantic_prompt=np.ones(309, bool)), "integer tokens, not bool"),
    "2-D semantic": (lambda: _with(semantic_prompt=np.ones((1, 309), np.int64)), "semantic_prompt must be 1-D"),
    "3 coarse codebooks": (
        lambda: _with(coarse_prompt=np.ones((3, 464), np.int64)),
        "coarse_prompt must be (2, frames)",
    ),
    "7 fine codebooks": (lambda: _with(fine_prompt=np.ones((7, 464), np.int64)), "fine_prompt must be (8, frames)"),
    "frames that differ": (lambda: _with(fine_prompt=np.ones((8, 460), np.int64)), "464 frames and fine_prompt 460"),
    "frames of other audio": (
        lambda: _with(coarse_prompt=np.ones((2, 600), np.int64), fine_prompt=np.ones((8, 600), np.int64)),
        "600 frames for 309 semantic tokens",
    ),
    "semantic token past the vocabulary": (
        lambda: _with(semantic_prompt=np.full(309, 10_000, np.int64)),
        "semantic_prompt holds tokens from 10000 to 10000",
    ),
    "negative code": (
        lambda: _with(coarse_prompt=np.full((2, 464), -1, np.int64)),
        "coarse_prompt holds tokens from -1",
    ),
    "code past the codebook": (lambda: _with(fine_prompt=np.full((8, 464), 1024, np.int32)), "vocabulary is 0..1023"),
    "huge unsigned code": (lambda: _with(fine_prompt=np.full((8, 464), 2**63, np.uint64)), "vocabulary is 0..1023"),
    "longer than one generation": (
        lambda: _with(
            semantic_prompt=np.ones(800, np.int64),
            coarse_prompt=np.ones((2, 1202), np.int64),
            fine_prompt=np.ones((8, 1202), np.int64),
        ),
        "Bark's prompts hold at most 768",
    ),
    "empty arrays": (
        lambda: _with(
            semantic_prompt=np.ones(0, np.int64),
            coarse_prompt=np.ones((2, 0), np.int64),
            fine_prompt=np.ones((8, 0), np.int64),
        ),
        "0 frames for 0 semantic tokens",
    ),
    "missing member": (lambda: _with(fine_prompt=None), "missing fine_prompt.npy"),
    "extra member": (lambda: _with(speaker_name=np.ones(3, np.int64)), "unexpected speaker_name.npy"),
    "truncated file": (lambda: _with()[:-200], "truncated"),
    "truncated member": (lambda: _truncated_member(), "fine_prompt"),
    "not an npz": (lambda: b"RIFF....WAVEfmt " * 10, "not an .npz archive"),
    "an .npy, not an .npz": (lambda: _npy(), "not an .npz archive"),
    "empty file": (lambda: b"", "is empty"),
    "oversize": (lambda: b"PK" + b"\0" * MAX_BYTES, f"over the limit of {MAX_BYTES}"),
    "a zip bomb": (_bomb, "more than a prompt of Bark's longest length needs"),
}


def _npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ones(10, np.int64))
    return buffer.getvalue()


def _truncated_member() -> bytes:
    """A zip whose fine_prompt member holds half an array (its header promises more)."""
    return zipped(bark_arrays(), lambda key, data: data[: len(data) // 2] if key == "fine_prompt" else data)
