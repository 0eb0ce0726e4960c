"""A 10-minute-audio job through a real sidecar process, its memory measured (issue #22).

The stub model answers with 10 minutes of 24 kHz PCM16 WAV (28.8 MB; 38.4 MB of base64 JSON). The
sidecar reads the answer once, stores the audio as bytes in 1 MiB chunks, delivers a download link and
streams the download from the store. Its peak RSS (`VmHWM`) must stay well inside the chart's memory
limit for the sidecar (512 MiB); benchmarks/jobs_store.py prints the figure (RESULTS.md).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.load.report import memory_mb
from tests.sidecar.harness import SECRET, FakeModel, Receiver, SidecarProcess, job_body, submit, wait_for

SAMPLE_RATE = 24_000
TEN_MINUTES_S = 600
#: The chart's default memory limit for the sidecar container (charts/bark-tts/values.yaml).
CHART_LIMIT_MIB = 512


def long_prediction(seconds: int = TEN_MINUTES_S) -> dict[str, Any]:
    """A v1 prediction carrying `seconds` of a quiet tone as WAV."""
    t = np.arange(seconds * SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    samples = (0.1 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    audio = buffer.getvalue()
    return {
        "audio": base64.b64encode(audio).decode(),
        "format": "wav",
        "sample_rate": SAMPLE_RATE,
        "duration_s": float(seconds),
        "chunks": 60,
        "segments": [{"turn": 0, "start_s": 0.0, "end_s": float(seconds), "text": "A long read."}],
    }


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    return memory_mb(pid, "VmHWM")


@pytest.fixture
def sidecar_process(tmp_path: Path, fake_model: FakeModel) -> Iterator[SidecarProcess]:
    process = SidecarProcess(
        {
            "SIDECAR_DB_PATH": str(tmp_path / "jobs.sqlite3"),
            "SIDECAR_MODEL_URL": fake_model.predict_url,
            "SIDECAR_WEBHOOK_SECRET": SECRET,
            "SIDECAR_WEBHOOK_ALLOWLIST": "127.0.0.1",
            "SIDECAR_POLL_INTERVAL_S": "0.05",
        },
        tmp_path / "sidecar.log",
    )
    yield process.start()
    process.stop()


def test_a_ten_minute_job_stays_well_inside_the_sidecars_memory_limit(
    sidecar_process: SidecarProcess, fake_model: FakeModel, receiver: Receiver
) -> None:
    prediction = long_prediction()
    wav = base64.b64decode(prediction["audio"])
    fake_model.answer = prediction
    assert sidecar_process.process is not None
    pid = sidecar_process.process.pid
    idle = peak_rss_mib(pid)

    job_id = submit(sidecar_process.url, job_body(receiver, "Ten minutes, please."))
    wait_for(lambda: receiver.acknowledged(), 120, "the 10-minute job delivered")
    (delivery,) = receiver.acknowledged()
    data = delivery.event()["data"]
    assert data["audio_bytes"] == len(wav) and "audio" not in data
    assert data["segments"] == prediction["segments"], "the prediction's other fields travel with the result"
    with httpx.stream("GET", data["audio_url"], timeout=60) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == len(wav)
        received = b"".join(response.iter_bytes())
    assert received == wav
    status = httpx.get(f"{sidecar_process.url}/jobs/{job_id}", timeout=10).json()
    assert status["state"] == "delivered"

    peak = peak_rss_mib(pid)
    print(f"sidecar peak RSS: idle {idle:.0f} MiB, after a 10-minute job and its download {peak:.0f} MiB")
    assert peak < CHART_LIMIT_MIB / 2, f"peak RSS {peak:.0f} MiB for a 10-minute job"
