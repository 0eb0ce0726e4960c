"""A Bark speaker prompt as data: read and checked from an `.npz`, written back byte for byte the same.

A Bark voice is three token arrays that cover the same stretch of audio and end together:
`semantic_prompt` (S,) semantic tokens, `coarse_prompt` (2, N) and `fine_prompt` (8, N) codec codes,
N frames at 75 Hz for S tokens at 49.9 Hz (N is 1.5 S). Bark's own presets and the community's
cloning tools save exactly these three keys with `np.savez`, and Bark's `generate_audio(...,
output_full=True)` + `save_as_prompt` keeps a generation as one.

Reading an upload is strict, before anything is stored (`read_npz`): a zip of exactly those three
`.npy` members, no pickles (`allow_pickle=False`), integer dtypes, Bark's shapes and codebook
counts, tokens inside the loaded model's vocabularies, Bark's frames-per-token ratio (its
`generate_coarse` asserts the same), lengths at most what one Bark generation makes (so a kept
generation, Bark's or ours, always fits), and a size bound on every member before it is inflated.
Each failure is an `InvalidInput` naming the field and what is wrong.

`cut` keeps the end of a prompt up to what Bark reads of one (the fine stage's 512 frames, and the
1.5x fewer semantic tokens covering them): the semantic stage reads the last 256 semantic tokens, the
coarse stage the last 209 with their 314 frames, so the cut changes no generated token. Bark's
`v2/en_speaker_0` is exactly that size (341 tokens, 512 frames).

`to_npz` writes a fixed layout (stored members, a fixed timestamp, int64 arrays), so equal tokens make
equal files: a seeded or greedy take kept twice is the same file twice.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bark_common.errors import InvalidInput

__all__ = ["KEYS", "KeptChunk", "PromptLimits", "SpeakerPrompt", "check_arrays", "read_npz"]

#: The members of a speaker prompt, in the order they are written.
KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")
#: Zip entries get this date, so a file's bytes depend on its tokens only.
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
#: Room for an `.npy` header beyond the array's bytes (numpy pads headers to 64 or 128 bytes).
_HEADER_ROOM = 4096


@dataclass(frozen=True)
class PromptLimits:
    """What a speaker prompt may hold for the loaded model (from its generation configs)."""

    semantic_vocab: int
    codebook_size: int
    n_coarse: int
    n_fine: int
    #: Frames per semantic token (75 Hz / 49.9 Hz): coarse and fine cover the semantic tokens' audio.
    frames_per_token: float
    #: The longest prompt accepted: one Bark generation (its semantic budget, and those tokens' frames).
    max_semantic: int
    max_frames: int
    #: What Bark reads of a prompt (see `SpeakerPrompt.cut`).
    keep_semantic: int
    keep_frames: int

    @classmethod
    def of(cls, semantic: Any, coarse: Any, fine: Any, codebook_size: int, max_semantic: int) -> PromptLimits:
        """From Bark's three generation configs (transformers' `Bark*GenerationConfig`) and the semantic
        stage's token budget (one generation's longest output)."""
        per_token = coarse.coarse_rate_hz / semantic.semantic_rate_hz
        keep_frames = int(fine.max_fine_history_length)
        return cls(
            semantic_vocab=int(semantic.semantic_vocab_size),
            codebook_size=int(codebook_size),
            n_coarse=int(coarse.n_coarse_codebooks),
            n_fine=int(fine.n_fine_codebooks),
            frames_per_token=per_token,
            max_semantic=max_semantic,
            max_frames=math.ceil(max_semantic * per_token),
            keep_semantic=max(int(semantic.max_input_semantic_length), round(keep_frames / per_token)),
            keep_frames=keep_frames,
        )

    def member_bytes(self) -> int:
        """The largest `.npy` member a valid prompt needs (8-byte integers at the longest lengths)."""
        return 8 * max(self.max_semantic, self.n_fine * self.max_frames) + _HEADER_ROOM


@dataclass(frozen=True, eq=False)
class SpeakerPrompt:
    """Semantic (S,), coarse (n_coarse, N) and fine (n_fine, N) tokens, int64, read-only."""

    semantic: np.ndarray
    coarse: np.ndarray
    fine: np.ndarray

    def __post_init__(self) -> None:
        for array in (self.semantic, self.coarse, self.fine):
            array.setflags(write=False)

    @classmethod
    def of(cls, semantic: Any, coarse: Any, fine: Any) -> SpeakerPrompt:
        """From array-likes (lists, numpy arrays or tensors), as int64 copies."""
        arrays = (
            item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item for item in (semantic, coarse, fine)
        )
        return cls(*(np.array(array, dtype=np.int64, copy=True) for array in arrays))

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(KEYS, (self.semantic, self.coarse, self.fine), strict=True))

    def to_npz(self) -> bytes:
        """The prompt as an `.npz` Bark and numpy read; the same tokens always give the same bytes."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for key, array in self.arrays().items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.ascontiguousarray(array, dtype=np.int64), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
                info.external_attr = 0o644 << 16
                archive.writestr(info, member.getvalue())
        return buffer.getvalue()

    @property
    def digest(self) -> str:
        """A content hash (of `to_npz`): equal tokens, equal digest; the device cache's key."""
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = hashlib.sha256(self.to_npz()).hexdigest()[:32]
            object.__setattr__(self, "_digest", cached)
        return cached

    def cut(self, limits: PromptLimits) -> SpeakerPrompt:
        """The end of the prompt, up to what Bark reads of one (no generated token changes)."""
        frames = min(self.coarse.shape[1], limits.keep_frames)
        tokens = min(self.semantic.shape[0], limits.keep_semantic)
        if frames == self.coarse.shape[1] and tokens == self.semantic.shape[0]:
            return self
        return SpeakerPrompt.of(self.semantic[-tokens:], self.coarse[:, -frames:], self.fine[:, -frames:])

    def tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """As the history prompt transformers' Bark reads (`BarkProcessor`'s `history_prompt`)."""
        return {key: torch.from_numpy(np.array(array)).to(device) for key, array in self.arrays().items()}

    def check(self, limits: PromptLimits, field: str) -> SpeakerPrompt:
        """Raise InvalidInput naming `field` unless the tokens make a prompt the model can use."""
        check_arrays(self.semantic, self.coarse, self.fine, limits, field)
        return self


@dataclass(frozen=True)
class KeptChunk:
    """A chunk's waveform and its generated tokens (when the request asked for them)."""

    waveform: np.ndarray
    prompt: SpeakerPrompt


def read_npz(data: bytes, limits: PromptLimits, max_bytes: int, field: str) -> SpeakerPrompt:
    """An uploaded speaker prompt, checked; any problem is a 400 naming `field` and what is wrong."""
    if not data:
        raise InvalidInput(f"{field}: is empty; send a Bark speaker prompt (.npz)", param=field)
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{field}: {len(data)} bytes is over the limit of {max_bytes} (voice_max_bytes)", param=field
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as error:  # whatever a broken upload makes zipfile raise, it is the client's file
        raise InvalidInput(
            f"{field}: not an .npz archive, or a truncated one ({error}); save one with numpy.savez", param=field
        ) from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        expected = {f"{key}.npy" for key in KEYS}
        missing = sorted(expected - set(members))
        extra = sorted(set(members) - expected)
        if missing or extra:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(extra)}"] if extra else []
            )
            raise InvalidInput(
                f"{field}: a Bark speaker prompt holds exactly {', '.join(KEYS)}; {'; '.join(problems)}", param=field
            )
        semantic, coarse, fine = (_read_member(archive, members[f"{key}.npy"], key, limits, field) for key in KEYS)
    check_arrays(semantic, coarse, fine, limits, field)  # on the arrays as sent, before any cast
    return SpeakerPrompt.of(semantic, coarse, fine)


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, limits: PromptLimits, field: str
) -> np.ndarray:
    where = f"{field}: {key}"
    if info.file_size > limits.member_bytes():  # checked before inflating: no zip bomb gets read
        raise InvalidInput(
            f"{where}: {info.file_size} bytes is more than a prompt of Bark's longest length needs "
            f"({limits.member_bytes()})",
            param=field,
        )
    try:
        raw = archive.read(info)
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            message = f"{where}: is a pickled object array; only integer arrays are read"
            raise InvalidInput(message, param=field) from None
        raise InvalidInput(f"{where}: not a readable .npy array ({error})", param=field) from None
    except Exception as error:  # a bad CRC, a cut stream, an unknown compression method, a lying header
        raise InvalidInput(f"{where}: truncated or corrupt ({type(error).__name__}: {error})", param=field) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise InvalidInput(f"{where}: must hold integer tokens, not {kind}", param=field)
    return array


def check_arrays(semantic: np.ndarray, coarse: np.ndarray, fine: np.ndarray, limits: PromptLimits, field: str) -> None:
    """Shapes, lengths and Bark's ratio first (so the token ranges are read from non-empty arrays)."""
    _check_shapes(semantic, coarse, fine, limits, field)
    _check_ranges(semantic, coarse, fine, limits, field)


def _check_shapes(semantic: np.ndarray, coarse: np.ndarray, fine: np.ndarray, limits: PromptLimits, field: str) -> None:
    if semantic.ndim != 1:
        raise InvalidInput(f"{field}: semantic_prompt must be 1-D (tokens,), got shape {semantic.shape}", param=field)
    for key, array, rows in (("coarse_prompt", coarse, limits.n_coarse), ("fine_prompt", fine, limits.n_fine)):
        if array.ndim != 2 or array.shape[0] != rows:
            raise InvalidInput(
                f"{field}: {key} must be ({rows}, frames), one row per codebook, got shape {array.shape}", param=field
            )
    if coarse.shape[1] != fine.shape[1]:
        raise InvalidInput(
            f"{field}: coarse_prompt has {coarse.shape[1]} frames and fine_prompt {fine.shape[1]}; they cover the "
            "same audio, so they must be equal",
            param=field,
        )
    tokens, frames = semantic.shape[0], coarse.shape[1]
    if tokens > limits.max_semantic or frames > limits.max_frames:
        raise InvalidInput(
            f"{field}: {tokens} semantic tokens and {frames} frames; Bark's prompts hold at most {limits.max_semantic} "
            f"and {limits.max_frames} (one generation; Bark reads only the last {limits.keep_semantic} and "
            f"{limits.keep_frames}): keep the end, e.g. semantic_prompt[-{limits.keep_semantic}:] and "
            f"coarse_prompt[:, -{limits.keep_frames}:]",
            param=field,
        )
    # Bark's own rule (its generate_coarse asserts it): both cover the same audio, 1.5 frames a token.
    if not tokens or round(frames / tokens, 1) != round(limits.frames_per_token, 1):
        raise InvalidInput(
            f"{field}: {frames} frames for {tokens} semantic tokens; a Bark prompt has "
            f"{limits.frames_per_token:.3f} frames per semantic token (the arrays must cover the same audio)",
            param=field,
        )


def _check_ranges(semantic: np.ndarray, coarse: np.ndarray, fine: np.ndarray, limits: PromptLimits, field: str) -> None:
    for key, array, size in (
        ("semantic_prompt", semantic, limits.semantic_vocab),
        ("coarse_prompt", coarse, limits.codebook_size),
        ("fine_prompt", fine, limits.codebook_size),
    ):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= size:
            raise InvalidInput(
                f"{field}: {key} holds tokens from {low} to {high}; this model's vocabulary is 0..{size - 1}",
                param=field,
            )
