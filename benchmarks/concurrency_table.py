"""Per-pod latency and throughput against concurrency, as vLLM-style TTS servers publish them.

N clients (1, 4, 8, 16, 32 by default), each with its own voice, temperature and seed, send
streaming requests back to back (closed loop) for `--duration` seconds per level, through the
synthesis service the HTTP routes use (first sentence alone and urgent, then the rest), on the
continuous scheduler, in one process. Per level: time to first audio (p50, p95), real-time factor
(wall / audio seconds, p50), and audio seconds produced per wall second, also as a multiple of
one client's.

Random weights never emit EOS: every chunk runs to its token budget (`--tokens-per-word`).

Usage:
  python benchmarks/concurrency_table.py --size tiny --clients 1 4 --duration 10      # CPU smoke run
  python benchmarks/concurrency_table.py --size small --device cuda                  # the GPU table
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from continuous_load import engine_settings, parse_engine_args  # noqa: E402  (this folder is on sys.path when run as a script)
from decode_steps import checkpoint_for, engine_header  # noqa: E402

from bark_common.schema import SynthesisRequest  # noqa: E402
from model_server.synthesis import SynthesisService  # noqa: E402

TEXT = (
    "Hello there. The morning fog rolled slowly over the quiet harbor today. "
    "Fishing boats came home heavy with their catch, and the market woke up."
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def one_request(service: SynthesisService, client: int, serial: int) -> tuple[float, float, float]:
    """(time to first audio, wall, audio seconds) of one streamed request."""
    request = SynthesisRequest(
        prompt=TEXT,
        voice=f"v2/en_speaker_{client % 10}",
        semantic_temperature=0.5 + 0.05 * (client % 8),
        seed=client * 1000 + serial,
    )
    started = time.perf_counter()
    plan = await asyncio.to_thread(lambda: service.plan(request, first_sentence_alone=True))
    futures = service.enqueue(request, plan, urgent_first=True)
    first = await futures[0]
    first_audio = time.perf_counter() - started
    rest = await asyncio.gather(*futures[1:])
    wall = time.perf_counter() - started
    samples = len(first) + sum(len(part) for part in rest)
    return first_audio, wall, samples / service.sample_rate


async def level(service: SynthesisService, clients: int, duration: float) -> dict[str, float]:
    deadline = time.perf_counter() + duration
    results: list[tuple[float, float, float]] = []

    async def client(number: int) -> None:
        serial = 0
        while time.perf_counter() < deadline or serial == 0:
            results.append(await one_request(service, number, serial))
            serial += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(number) for number in range(clients)))
    makespan = time.perf_counter() - started
    first = [result[0] for result in results]
    return {
        "clients": clients,
        "requests": len(results),
        "ttfa_p50": statistics.median(first),
        "ttfa_p95": percentile(first, 0.95),
        "rtf_p50": statistics.median(wall / audio for _, wall, audio in results),
        "audio_per_s": sum(audio for *_, audio in results) / makespan,
    }


async def run(args: argparse.Namespace) -> None:
    checkpoint = checkpoint_for(args.size, args.cache_dir)
    settings = engine_settings(args, checkpoint, max_queue_chunks=4096, warmup=True)
    service = await asyncio.to_thread(SynthesisService.load, settings)
    await one_request(service, 0, 0)  # lazy initialisation, sentence splitter
    print(engine_header(args.size, service.engine, args.tokens_per_word))
    print(f"# chunking: {'one sentence per chunk' if service.sentence_chunks else 'packed sentences'}\n")
    print(
        "| clients | requests | first audio p50 (s) | first audio p95 (s) | real-time factor p50 "
        + "| audio-s per s | vs 1 |"
    )
    print("|---|---|---|---|---|---|---|")
    baseline = None
    for clients in args.clients:
        row = await level(service, clients, args.duration)
        baseline = baseline or row["audio_per_s"]
        print(
            f"| {clients} | {row['requests']} | {row['ttfa_p50']:.3f} | {row['ttfa_p95']:.3f} | {row['rtf_p50']:.3f} "
            f"| {row['audio_per_s']:.2f} | {row['audio_per_s'] / baseline:.2f}x |",
            flush=True,
        )
    await service.scheduler.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small", "large"], default="tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of back-to-back requests per level")
    args = parse_engine_args(parser, argv, max_batch_size=64)  # 32 clients' streams, first sentences apart
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
