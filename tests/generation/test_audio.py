"""PCM conversion, speed and encoding: every format decodes back to the right duration."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from model_server.generation.audio import FORMATS, change_speed, encode, join_with_pauses, stream_encoder, to_pcm16

RATE = 24_000


def decoded_seconds(data: bytes, fmt: str) -> float:
    """Decode with an independent reader: soundfile where libsndfile reads it, else FFmpeg."""
    if fmt == "pcm":
        return len(data) / 2 / RATE
    if fmt in ("wav", "flac", "mp3", "opus"):
        samples, rate = sf.read(io.BytesIO(data))
        return len(samples) / rate
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
        return sum(frame.samples for frame in frames) / frames[0].sample_rate


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_pcm16_clips_instead_of_rescaling():
    pcm = to_pcm16(np.array([0.0, 0.5, 1.0, -1.0, 3.0, -7.0, np.nan], dtype=np.float32))
    assert pcm.tolist() == [0, 16384, 32767, -32767, 32767, -32767, 0]


def test_pause_is_inserted_between_parts_only():
    parts = [np.ones(100, dtype=np.float32), np.ones(50, dtype=np.float32)]
    joined = join_with_pauses(parts, sample_rate=1000, pause_ms=20)
    assert len(joined) == 100 + 20 + 50
    assert (joined[100:120] == 0).all() and (joined[:100] == 1).all() and (joined[120:] == 1).all()


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_file_decodes_to_the_same_samples(fmt):
    audio = np.random.default_rng(0).uniform(-0.9, 0.9, 2400).astype(np.float32)
    samples, rate = sf.read(io.BytesIO(encode(audio, RATE, fmt)), dtype="int16")
    assert rate == RATE
    assert np.array_equal(samples, to_pcm16(audio))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_decodes_back_to_its_duration(fmt):
    data = encode(tone(1.5), RATE, fmt)
    # Lossy codecs add up to a frame or two of encoder delay/padding.
    assert decoded_seconds(data, fmt) == pytest.approx(1.5, abs=0.1)


@pytest.mark.parametrize("fmt", sorted(name for name, info in FORMATS.items() if info.streams))
def test_streamed_pieces_concatenate_into_one_playable_file(fmt):
    encoder = stream_encoder(fmt, RATE)
    pieces = [encoder.feed(tone(0.5)) for _ in range(3)] + [encoder.finish()]
    assert pieces[0], "the first piece must carry audio (or a header) right away"
    assert decoded_seconds(b"".join(pieces), fmt) == pytest.approx(1.5, abs=0.1)


def test_streamed_wav_header_says_length_unknown():
    data = stream_encoder("wav", RATE).feed(tone(0.1))
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff" and data[8:12] == b"WAVE"


def test_speed_resamples_the_duration():
    audio = tone(2.0)
    assert len(change_speed(audio, 2.0)) == len(audio) // 2
    assert len(change_speed(audio, 0.5)) == len(audio) * 2
    assert change_speed(audio, 1.0) is audio


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unsupported format"):
        encode(np.zeros(10, dtype=np.float32), RATE, "mp4")
    with pytest.raises(ValueError, match="does not stream"):
        stream_encoder("flac", RATE)
