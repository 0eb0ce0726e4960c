"""Audio helpers: joining chunk waveforms, PCM conversion and container encoding (soundfile)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import soundfile as sf

#: soundfile names of the containers we write, and the PCM subtype each uses.
_CONTAINERS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}


def join_with_pauses(parts: Sequence[np.ndarray], sample_rate: int, pause_ms: int) -> np.ndarray:
    """Concatenate mono float waveforms in order with `pause_ms` of silence between them."""
    if not parts:
        return np.zeros(0, dtype=np.float32)
    pause = np.zeros(int(sample_rate * pause_ms / 1000), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for index, part in enumerate(parts):
        if index:
            pieces.append(pause)
        pieces.append(np.asarray(part, dtype=np.float32).reshape(-1))
    return np.concatenate(pieces)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16: clip, then scale by 32767 (no data-dependent divisor)."""
    clean = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(clean, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode mono float audio as a complete file in `fmt`."""
    try:
        container, subtype = _CONTAINERS[fmt]
    except KeyError:
        raise ValueError(f"unsupported format {fmt!r}; choose one of {sorted(_CONTAINERS)}") from None
    buffer = io.BytesIO()
    sf.write(buffer, to_pcm16(audio), sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def encode_base64(audio: np.ndarray, sample_rate: int, fmt: str) -> str:
    return base64.b64encode(encode(audio, sample_rate, fmt)).decode("ascii")
