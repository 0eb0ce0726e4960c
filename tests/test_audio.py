"""PCM conversion and encoding: clip then scale by 32767, files decode back with soundfile."""

import io

import numpy as np
import pytest
import soundfile as sf

from model_server.audio import encode, join_with_pauses, to_pcm16


def test_pcm16_clips_instead_of_rescaling():
    pcm = to_pcm16(np.array([0.0, 0.5, 1.0, -1.0, 3.0, -7.0, np.nan], dtype=np.float32))
    assert pcm.tolist() == [0, 16384, 32767, -32767, 32767, -32767, 0]


def test_pause_is_inserted_between_parts_only():
    parts = [np.ones(100, dtype=np.float32), np.ones(50, dtype=np.float32)]
    joined = join_with_pauses(parts, sample_rate=1000, pause_ms=20)
    assert len(joined) == 100 + 20 + 50
    assert (joined[100:120] == 0).all() and (joined[:100] == 1).all() and (joined[120:] == 1).all()


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_encoded_file_decodes_to_the_same_samples(fmt):
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.9, 0.9, 2400).astype(np.float32)
    samples, rate = sf.read(io.BytesIO(encode(audio, 24_000, fmt)), dtype="int16")
    assert rate == 24_000
    assert np.array_equal(samples, to_pcm16(audio))


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unsupported format"):
        encode(np.zeros(10, dtype=np.float32), 24_000, "mp4")
