"""Audio helpers: joining chunk waveforms, PCM conversion, speed, and encoding whole or streamed.

Encoders are maintained libraries: soundfile (libsndfile) for WAV and FLAC, PyAV (FFmpeg's
libmp3lame, libopus and native AAC) for the compressed formats, because those must also stream:
FFmpeg's muxers write frames as they are encoded into a non-seekable sink, while libsndfile's MP3
writer goes back at close to rewrite its header. PCM is raw 16-bit little-endian; streamed WAV
carries a header whose sizes say "unknown length" (0xFFFFFFFF), which players accept.
"""

from __future__ import annotations

import base64
import io
import struct
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import soundfile as sf

# One format table for the server and the sidecar's downloads (bark_common has no heavy imports).
from bark_common.formats import FORMATS as FORMATS
from bark_common.formats import AudioFormat as AudioFormat
from bark_common.formats import FormatInfo as FormatInfo

#: PyAV container format, codec and muxer options per compressed format.
_AV_FORMATS = {
    "mp3": ("mp3", "libmp3lame", {"write_xing": "0"}),  # no Xing header: it would be rewritten at close
    "opus": ("ogg", "libopus", {}),
    "aac": ("adts", "aac", {}),
}
_SOUNDFILE_FORMATS = {"wav": "WAV", "flac": "FLAC"}


def silence(sample_rate: int, pause_ms: int) -> np.ndarray:
    """The pause put between chunks, whether they are joined whole or streamed one by one."""
    return np.zeros(int(sample_rate * pause_ms / 1000), dtype=np.float32)


def join_with_pauses(parts: Sequence[np.ndarray], sample_rate: int, pause_ms: int) -> np.ndarray:
    """Concatenate mono float waveforms in order with `pause_ms` of silence between them."""
    if not parts:
        return np.zeros(0, dtype=np.float32)
    pause = silence(sample_rate, pause_ms)
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


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play `speed` times faster by resampling (linear interpolation): pitch moves with speed."""
    if speed == 1.0 or len(audio) < 2:
        return audio
    length = max(1, round(len(audio) / speed))
    positions = np.linspace(0, len(audio) - 1, num=length)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


class _Sink:
    """A write-only, non-seekable byte sink: muxers must write forward, which is what streams need."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class StreamEncoder(Protocol):
    def feed(self, audio: np.ndarray) -> bytes: ...
    def finish(self) -> bytes: ...
    def close(self) -> None:
        """Free the encoder; safe after finish() and on a stream stopped early (no trailer is wanted then)."""


class _AvEncoder:
    def __init__(self, fmt: str, sample_rate: int):
        import av

        container_format, codec, options = _AV_FORMATS[fmt]
        self._sample_rate = sample_rate
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format=container_format, options=options, buffer_size=4096)
        self._stream: Any = self._container.add_stream(codec, rate=sample_rate, layout="mono")  # type: ignore[call-overload]
        self._closed = False

    def feed(self, audio: np.ndarray) -> bytes:
        import av

        frame = av.AudioFrame.from_ndarray(to_pcm16(audio).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._sample_rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()
        return self._sink.take()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


class _PcmEncoder:
    """Raw PCM16; with `wav_header`, first a WAV header whose sizes mean "length unknown"."""

    def __init__(self, sample_rate: int, wav_header: bool):
        self._header = _streaming_wav_header(sample_rate) if wav_header else b""

    def feed(self, audio: np.ndarray) -> bytes:
        header, self._header = self._header, b""
        return header + to_pcm16(audio).astype("<i2").tobytes()

    def finish(self) -> bytes:
        header, self._header = self._header, b""
        return header

    def close(self) -> None:
        """Nothing to free: PCM is converted in memory."""


def _streaming_wav_header(sample_rate: int) -> bytes:
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


def stream_encoder(fmt: str, sample_rate: int) -> StreamEncoder:
    """An incremental encoder for a streaming format (see FORMATS[fmt].streams)."""
    if fmt == "pcm":
        return _PcmEncoder(sample_rate, wav_header=False)
    if fmt == "wav":
        return _PcmEncoder(sample_rate, wav_header=True)
    if fmt in ("mp3", "opus"):
        return _AvEncoder(fmt, sample_rate)
    raise ValueError(f"format {fmt!r} does not stream; streaming formats: {streaming_formats()}")


def streaming_formats() -> list[str]:
    return sorted(name for name, info in FORMATS.items() if info.streams)


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode mono float audio as one complete file in `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"unsupported format {fmt!r}; choose one of {sorted(FORMATS)}")
    if fmt in _SOUNDFILE_FORMATS:
        buffer = io.BytesIO()
        sf.write(buffer, to_pcm16(audio), sample_rate, format=_SOUNDFILE_FORMATS[fmt], subtype="PCM_16")
        return buffer.getvalue()
    if fmt == "pcm":
        return to_pcm16(audio).astype("<i2").tobytes()
    encoder = _AvEncoder(fmt, sample_rate)
    return encoder.feed(audio) + encoder.finish()


def encode_base64(audio: np.ndarray, sample_rate: int, fmt: str) -> str:
    return base64.b64encode(encode(audio, sample_rate, fmt)).decode("ascii")
