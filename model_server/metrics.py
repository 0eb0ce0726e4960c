"""Prometheus metrics (prefix `bark_`), registered in the default registry that KServe serves on /metrics.

Label values are bounded: stages and outcomes are fixed lists, voices are the model's preset list.
Prompt text never becomes a label.
"""

from __future__ import annotations

import contextlib

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

# Bark takes seconds to minutes per request; KServe's default buckets stop far too early.
_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
_RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: The stages of one request, in order. `split` and `encode` run per request, the rest per batch.
STAGES = ("split", "semantic", "coarse", "fine", "codec_decode", "encode")

REQUEST_LATENCY = Histogram(
    "bark_request_duration_seconds",
    "Wall time of a synthesis request, from parsed input to encoded audio.",
    ["route"],
    buckets=_SECONDS_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "bark_stage_duration_seconds",
    "Wall time of one pipeline stage (per batch for model stages, per request otherwise).",
    ["stage"],
    buckets=_SECONDS_BUCKETS,
)
AUDIO_SECONDS = Counter("bark_audio_seconds_total", "Seconds of audio produced.", ["route"])
REAL_TIME_FACTOR = Histogram(
    "bark_real_time_factor",
    "Wall seconds per second of audio produced, per request (below 1 is faster than real time).",
    ["route"],
    buckets=_RTF_BUCKETS,
)
BATCH_SIZE = Histogram("bark_batch_size", "Chunks per batched generate call.", buckets=_BATCH_BUCKETS)
QUEUE_DEPTH = Gauge("bark_queue_depth", "Chunks waiting in the batch queue.")
QUEUE_CAPACITY = Gauge("bark_queue_capacity", "Chunks the batch queue holds before it answers 503.")
INFLIGHT_CHUNKS = Gauge("bark_inflight_chunks", "Chunks being generated right now.")
# The continuous scheduler (BARK_SCHEDULER=continuous, continuous/loop.py): one observation per step.
ACTIVE_ROWS = Histogram(
    "bark_active_rows", "Rows (chunks) in one decoding step of the continuous loop.", buckets=_BATCH_BUCKETS
)
STEP_SECONDS = Histogram(
    "bark_step_duration_seconds",
    "Wall time of one continuous-loop iteration (both stages, sampling, admissions' coarse windows).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ADMISSION_WAIT = Histogram(
    "bark_admission_wait_seconds",
    "Time a chunk waited in the queue before it joined the running rows.",
    buckets=_SECONDS_BUCKETS,
)
ADMISSIONS = Counter("bark_admissions_total", "Chunks admitted into the running rows.")
FINE_PASS_ROWS = Histogram(
    "bark_fine_pass_rows",
    "Rows (chunks) sharing one fine-stage pass of the continuous loop (more than one only on CUDA).",
    buckets=_BATCH_BUCKETS,
)
REQUESTS = Counter(
    "bark_requests_total",
    "Synthesis requests by outcome; `reason` is one of a fixed set.",
    ["route", "code", "reason"],
)
VOICE_REQUESTS = Counter(
    "bark_voice_requests_total",
    "Instances synthesised per voice preset (`custom` for any custom voice, `random` for none).",
    ["voice"],
)
# Custom voices (voice_store/): what this replica knows, whether it reaches the store, and its caches.
CUSTOM_VOICES = Gauge(
    "bark_custom_voices", "Custom voices in the voice store (all owners), as this replica last read it."
)
VOICE_STORE_UP = Gauge(
    "bark_voice_store_up",
    "1 while this replica reaches its voice store; 0 while it serves presets and cached voices only (degraded).",
)
VOICE_STORE_ERRORS = Counter(
    "bark_voice_store_errors_total",
    "Voice store operations that failed (the store unreachable or refusing), by operation.",
    ["operation"],
)
#: The operations of VOICE_STORE_ERRORS (a fixed set).
VOICE_STORE_OPERATIONS = ("connect", "watch", "read", "write")
for _operation in VOICE_STORE_OPERATIONS:
    VOICE_STORE_ERRORS.labels(operation=_operation)
VOICE_CACHE = Counter(
    "bark_voice_cache_lookups_total",
    "Custom-voice lookups: `cache=host` the replica's memory (a miss reads the store), `cache=device` the "
    "prompt tensors on the model's device (a miss copies them there).",
    ["cache", "result"],
)
for _cache in ("host", "device"):
    for _result in ("hit", "miss"):
        VOICE_CACHE.labels(cache=_cache, result=_result)
MODEL_LOAD_SECONDS = Gauge("bark_model_load_seconds", "Seconds the model took to load and warm up.")
MODEL_INFO = Gauge(
    "bark_model_info",
    "The loaded model (value 1); `decoder_fallback` says why decoder=auto runs a slower decoder, else none.",
    ["source", "device", "dtype", "attention", "decoder", "decoder_fallback"],
)
#: Why the decoder ran slower than asked: `cudagraph_unavailable` (decoder=auto at start: no CUDA
#: graphs, static cache run eagerly) and `capture_failed` (one step shape could not be captured and
#: runs eagerly from then on; the other shapes keep their graphs).
DECODER_FALLBACK_REASONS = ("cudagraph_unavailable", "capture_failed")
DECODER_FALLBACKS = Counter(
    "bark_decoder_fallbacks_total",
    "Times the decoder fell back to a slower path, by reason (see DECODER_FALLBACK_REASONS).",
    ["reason"],
)
for _reason in DECODER_FALLBACK_REASONS:
    DECODER_FALLBACKS.labels(reason=_reason)  # exported as 0 from the start, not absent
# Registered only where CUDA is present (track_gpu_memory): on CPU the series are absent, not 0.
GPU_MEMORY_BYTES = Gauge("bark_gpu_memory_allocated_bytes", "GPU memory allocated by torch (CUDA only).", registry=None)
GPU_MEMORY_RESERVED_BYTES = Gauge(
    "bark_gpu_memory_reserved_bytes",
    "GPU memory reserved by torch's caching allocator (CUDA only).",
    registry=None,
)


def track_gpu_memory() -> None:
    """Read torch's CUDA allocator at scrape time; absent series on CPU, never a stale zero."""
    import torch

    if not torch.cuda.is_available():
        return
    for gauge, reading in (
        (GPU_MEMORY_BYTES, torch.cuda.memory_allocated),
        (GPU_MEMORY_RESERVED_BYTES, torch.cuda.memory_reserved),
    ):
        gauge.set_function(reading)
        with contextlib.suppress(ValueError):  # already registered (a second model load in-process)
            REGISTRY.register(gauge)
