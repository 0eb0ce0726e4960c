"""Ours vs the original Bark API pipeline, and server throughput under concurrency.

Mode `pipeline` runs, in one process on the same weights and the same ~1 minute English text:
  (a) a faithful re-implementation of the original pipeline: the text cut every 17 words, all
      chunks generated in ONE `BarkModel.generate` call without output lengths (so every chunk is
      padded to the batch's longest), joined untrimmed, converted to int16 by peak normalisation;
  (b) ours: Punkt sentences packed into chunks, batched, each chunk trimmed to its own length,
      joined with short pauses, clipped to PCM16 and encoded (the static batch path);
  (c) ours (continuous): the same text through the synthesis service and the continuous loop, as
      the server runs it (one sentence per chunk on CUDA under BARK_CHUNKING=auto).
Random weights never emit end-of-sequence, so both cap semantic tokens per chunk by its word count
with the same formula (`--tokens-per-word` x words); the original can only apply one cap to its
whole batch (its longest chunk's), ours applies each chunk's own.

Mode `server` starts `python -m model_server` and measures throughput (audio seconds per wall
second) with 1, 4 and 16 concurrent clients, each sending the same request.

Mode `stream` starts the server and measures, for the same text on `/v1/audio/speech`, the time to
the first audio byte when streaming against the time to the whole file when not streaming.

Usage:
  python benchmarks/original_vs_ours.py --mode pipeline --size tiny
  python benchmarks/original_vs_ours.py --mode server --size tiny --requests 16
  python benchmarks/original_vs_ours.py --mode stream --size tiny
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bark_common.schema import SynthesisRequest  # noqa: E402
from model_server.config import Settings  # noqa: E402
from model_server.generation import audio  # noqa: E402
from model_server.generation.engine import BarkEngine, Sampling  # noqa: E402
from model_server.generation.text import chunk_text  # noqa: E402
from model_server.synthesis import SynthesisService  # noqa: E402
from model_server.tiny import build_checkpoint  # noqa: E402

#: About one minute of speech at ~150 words per minute.
ONE_MINUTE_TEXT = (
    "The morning fog rolled slowly over the harbor, hiding the fishing boats that had left before dawn. "
    "On the pier, an old man sat on a wooden crate and mended a net with patient, practiced hands. "
    "Children ran past him on their way to school, laughing and shouting to one another. "
    "He did not look up, but he smiled, remembering the years when he had been just as loud. "
    "By nine o'clock the sun had burned away the mist, and the water sparkled like broken glass. "
    "The first boats came back heavy with their catch, and the market woke to the noise of bargaining. "
    "Merchants argued over prices while gulls circled overhead, waiting for anything left behind. "
    "It was, the old man thought, a good day to be alive and a better day to be near the sea. "
    "He tied the last knot, folded the net, and walked home along the narrow street."
)
ORIGINAL_CHUNK_WORDS = 17


def checkpoint_for(size: str, cache: Path) -> Path:
    folder = cache / f"bark-{size}"
    if not (folder / "config.json").exists():
        build_checkpoint(folder, size=size)
    return folder


def budget(words: int, tokens_per_word: float, maximum: int) -> int:
    return max(1, min(maximum, math.ceil(words * tokens_per_word)))


def run_original(engine: BarkEngine, text: str, voice: str, tokens_per_word: float) -> tuple[float, float]:
    """The original API: 17-word chunks, one untrimmed batch, peak-normalised int16."""
    words = text.split()
    chunks = [" ".join(words[i : i + ORIGINAL_CHUNK_WORDS]) for i in range(0, len(words), ORIGINAL_CHUNK_WORDS)]
    cap = budget(max(len(c.split()) for c in chunks), tokens_per_word, engine.max_semantic_tokens)
    started = time.perf_counter()
    inputs = engine.processor(chunks, voice_preset=voice)
    inputs = {k: (v.to(engine.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
    with torch.inference_mode():
        waveforms = engine.model.generate(
            **inputs, do_sample=True, fine_temperature=0.5, coarse_temperature=0.7, semantic_max_new_tokens=cap
        )
    joined = waveforms.float().cpu().numpy().reshape(-1)  # every row padded to the longest: untrimmed
    pcm = (joined / max(np.abs(joined).max(), 1e-9) * 32767).astype(np.int16)
    wall = time.perf_counter() - started
    return wall, len(pcm) / engine.sample_rate


def run_ours(engine: BarkEngine, text: str, voice: str, max_batch: int) -> tuple[float, float]:
    started = time.perf_counter()
    chunks = chunk_text(text, engine.settings.default_chunk_words)
    budgets = [engine.semantic_budget(len(c.split())) for c in chunks]
    parts: list[np.ndarray] = []
    for start in range(0, len(chunks), max_batch):
        output = engine.generate_batch(
            chunks[start : start + max_batch], voice, Sampling(), budgets[start : start + max_batch]
        )
        parts.extend(output.waveforms)
    joined = audio.join_with_pauses(parts, engine.sample_rate, engine.settings.pause_ms)
    audio.encode(joined, engine.sample_rate, "wav")
    wall = time.perf_counter() - started
    return wall, len(joined) / engine.sample_rate


def run_ours_continuous(service: SynthesisService, text: str, voice: str) -> tuple[float, float]:
    """Ours as the server runs it: the continuous loop (sentence rows on CUDA under BARK_CHUNKING=auto)."""
    started = time.perf_counter()
    result = asyncio.run(service.synthesize(SynthesisRequest(prompt=text, voice=voice)))
    audio.encode(result.waveform, service.sample_rate, "wav")
    wall = time.perf_counter() - started
    return wall, len(result.waveform) / service.sample_rate


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"


def pipeline_mode(args: argparse.Namespace, checkpoint: Path) -> None:
    settings = Settings(
        model_dir=checkpoint,
        device=args.device,
        attention=args.attention,
        semantic_tokens_per_word=args.tokens_per_word,
        semantic_tokens_min=1,
    )
    engine = BarkEngine(settings)
    engine.warm_up()
    service = SynthesisService(settings, engine)  # the continuous loop, warmed up like the server's
    voice = "v2/en_speaker_6"
    print(f"# pipeline, size={args.size}, device={engine.device}, dtype={engine.dtype}, attention={engine.attention}")
    print(f"# ours (continuous): {'one sentence per chunk' if service.sentence_chunks else 'packed sentences'}")
    print(f"# {len(ONE_MINUTE_TEXT.split())} words, tokens/word cap {args.tokens_per_word}, {machine()}")
    rows = []
    for name, runner in (
        ("original", lambda: run_original(engine, ONE_MINUTE_TEXT, voice, args.tokens_per_word)),
        ("ours", lambda: run_ours(engine, ONE_MINUTE_TEXT, voice, args.max_batch)),
        ("ours (continuous)", lambda: run_ours_continuous(service, ONE_MINUTE_TEXT, voice)),
    ):
        walls, audios = [], []
        for _ in range(args.repeats):
            torch.manual_seed(0)
            wall, seconds = runner()
            walls.append(wall)
            audios.append(seconds)
        wall, seconds = float(np.median(walls)), float(np.median(audios))
        rows.append((name, wall, seconds))
        print(f"{name:17s} wall {wall:7.2f} s  audio {seconds:7.2f} s  audio-s per wall-s {seconds / wall:6.2f}")
    (_, wall_o, audio_o), *ours = rows
    for name, wall_n, audio_n in ours:
        print(
            f"ratio {name}/original: wall {wall_n / wall_o:.2f}x, "
            f"throughput {(audio_n / wall_n) / (audio_o / wall_o):.2f}x"
        )
    print(f"note: the original's {audio_o:.1f} s include padded tails (untrimmed); ours do not")


def server_mode(args: argparse.Namespace, checkpoint: Path) -> None:
    import httpx

    from tests.serving import running_server

    prompt = " ".join(ONE_MINUTE_TEXT.split()[: args.request_words])
    body = {"instances": [{"prompt": prompt, "voice": "v2/en_speaker_6"}]}
    env = {
        "BARK_SEMANTIC_TOKENS_PER_WORD": str(args.tokens_per_word),
        "BARK_SEMANTIC_TOKENS_MIN": "1",
        "BARK_MAX_BATCH_SIZE": str(args.max_batch),
        "BARK_ATTENTION": args.attention,
        "BARK_MAX_QUEUE_CHUNKS": "4096",
    }
    print(f"# server, size={args.size}, {args.request_words}-word requests, {args.requests} per level, {machine()}")
    with tempfile.TemporaryDirectory() as logs, running_server(checkpoint, Path(logs), env=env) as server:

        def one(_: int) -> float:
            response = httpx.post(server.url + "/v1/models/bark:predict", json=body, timeout=3600)
            response.raise_for_status()
            return float(response.json()["predictions"][0]["duration_s"])

        one(0)  # warm
        baseline = None
        for clients in (1, 4, 16):
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                produced = sum(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - started
            rate = produced / wall
            baseline = baseline or rate
            print(
                f"clients {clients:2d}: {args.requests} requests, wall {wall:7.2f} s, audio {produced:7.2f} s, "
                f"audio-s per wall-s {rate:6.2f}, vs 1 client {rate / baseline:5.2f}x"
            )


def stream_mode(args: argparse.Namespace, checkpoint: Path) -> None:
    import httpx

    from tests.serving import running_server

    env = {
        "BARK_SEMANTIC_TOKENS_PER_WORD": str(args.tokens_per_word),
        "BARK_SEMANTIC_TOKENS_MIN": "1",
        "BARK_ATTENTION": args.attention,
    }
    body = {"model": "bark", "input": ONE_MINUTE_TEXT, "voice": "v2/en_speaker_6", "response_format": "pcm"}
    print(f"# stream, size={args.size}, {len(ONE_MINUTE_TEXT.split())} words, {machine()}")
    with tempfile.TemporaryDirectory() as logs, running_server(checkpoint, Path(logs), env=env) as server:
        url = server.url + "/v1/audio/speech"
        httpx.post(url, json={**body, "input": "Warm up."}, timeout=600)
        for _ in range(args.repeats):
            started = time.perf_counter()
            whole = httpx.post(url, json=body, timeout=3600)
            whole.raise_for_status()
            not_streaming = time.perf_counter() - started
            started = time.perf_counter()
            first = None
            with httpx.stream("POST", url, json={**body, "stream": True}, timeout=3600) as response:
                for piece in response.iter_raw():
                    if piece and first is None:
                        first = time.perf_counter() - started
            streaming_total = time.perf_counter() - started
            assert first is not None
            print(
                f"not streaming: whole file after {not_streaming:6.2f} s; streaming: first audio after {first:6.2f} s "
                f"(total {streaming_total:6.2f} s); first audio {not_streaming / first:5.1f}x sooner"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["pipeline", "server", "stream", "both"], default="both")
    parser.add_argument("--size", choices=["tiny", "small", "large"], default="tiny")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--tokens-per-word", type=float, default=20.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--request-words", type=int, default=40)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    checkpoint = checkpoint_for(args.size, args.cache)
    if args.mode in ("pipeline", "both"):
        pipeline_mode(args, checkpoint)
    if args.mode in ("server", "both"):
        server_mode(args, checkpoint)
    if args.mode == "stream":
        stream_mode(args, checkpoint)


if __name__ == "__main__":
    main()
