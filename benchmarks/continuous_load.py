"""Continuous vs static scheduling on the same weights, in one process: concurrency, head-of-line, Poisson load.

Both schedulers serve the same `BarkTTS` model (one engine load); requests go through
`SynthesisService.synthesize` (chunking, scheduler, joining) as the HTTP routes do, without HTTP.

Scenarios (`--scenarios`, all by default):
  concurrency   N clients (4 and 16) at once, vs the same N requests in a row: the speed-up, for
                same voice + settings and for all-different voices, temperatures and seeds.
  short-long    a one-sentence (10-word) request sent 1 s into a 12-chunk request (20-word chunks):
                the short one's latency vs the long one's solo time.
  poisson       open-loop Poisson arrivals (mixed voices/settings, 1-4 chunks) for `--duration` s
                at each of `--rates`: throughput (requests/s completed) and p50/p95 latency.
  capacity      closed loop (the continuous scheduler only, as the server runs it): `--concurrency`
                clients each send the Poisson mix back to back for `--duration` s; throughput,
                p50/p95 latency and the mean of the autoscaling signal (bark_queue_depth +
                bark_inflight_chunks, what the KEDA query sums) per level; `--rounds` rounds and
                their medians. docs/SCALING.md derives the chart's scaling targets from it.

Random weights never emit EOS: every chunk runs to its token budget (`--tokens-per-word`), so
lengths are fixed by the text. The machine is shared and noisy: compare ratios within one run.

Usage:
  python benchmarks/continuous_load.py --size tiny
  python benchmarks/continuous_load.py --size small --scenarios concurrency --clients 4
  python benchmarks/continuous_load.py --size tiny --scenarios poisson --rates 1 2 4 --duration 60
  python benchmarks/continuous_load.py --size tiny --scenarios capacity --concurrency 1 2 4 8 16 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from decode_steps import checkpoint_for, engine_header  # noqa: E402  (this folder is on sys.path when run as a script)

from bark_common.schema import SynthesisRequest  # noqa: E402
from model_server.config import Settings  # noqa: E402
from model_server.generation.continuous.bark_rows import BarkRowEngine  # noqa: E402
from model_server.generation.continuous.loop import ContinuousScheduler  # noqa: E402
from model_server.generation.scheduler import Scheduler  # noqa: E402
from model_server.model import BarkTTS  # noqa: E402
from model_server.synthesis import SynthesisService  # noqa: E402

SENTENCE = "The morning fog rolled slowly over the quiet harbor today."  # 10 words
#: The autoscaling signal of one pod (docs/SCALING.md): chunks waiting plus chunks being generated.
SIGNAL_GAUGES = ("bark_queue_depth", "bark_inflight_chunks")


def request(
    chunks: int, voice: int = 1, temperature: float = 0.7, seed: int | None = None, sentences_per_chunk: int = 1
) -> SynthesisRequest:
    """`chunks` chunks of `sentences_per_chunk` 10-word sentences each."""
    return SynthesisRequest(
        prompt=" ".join([SENTENCE] * chunks * sentences_per_chunk),
        voice=f"v2/en_speaker_{voice % 10}",
        semantic_temperature=temperature,
        coarse_temperature=temperature,
        seed=seed,
        batch_chunk_size=10 * sentences_per_chunk,
    )


def mixed_request(rng: random.Random) -> tuple[int, SynthesisRequest]:
    """The load's mix: 1 to 4 chunks, any of ten voices, one of three temperatures (chunks, request)."""
    chunks = rng.randint(1, 4)
    return chunks, request(chunks, voice=rng.randrange(10), temperature=rng.choice([0.5, 0.7, 0.9]))


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]


class Bench:
    def __init__(self, model: BarkTTS, schedulers: dict[str, Any]):
        self.model = model
        self.schedulers = schedulers

    async def timed(self, req: SynthesisRequest) -> float:
        started = time.perf_counter()
        await self.model.service.synthesize(req)
        return time.perf_counter() - started

    async def concurrency(self, clients: int) -> list[str]:
        lines = []
        mixes = {
            "same voice+settings": [request(1) for _ in range(clients)],
            "all different": [request(1, voice=i, temperature=0.5 + 0.05 * i, seed=i) for i in range(clients)],
        }
        for name, scheduler in self.schedulers.items():
            self.model.service.scheduler = scheduler
            speedups = {}
            for mix, requests in mixes.items():
                in_a_row = sum([await self.timed(req) for req in requests])
                started = time.perf_counter()
                await asyncio.gather(*(self.timed(req) for req in requests))
                together = time.perf_counter() - started
                speedups[mix] = in_a_row / together
                lines.append(f"| {name} | {clients} | {mix} | {in_a_row:.2f} | {together:.2f} | {speedups[mix]:.2f}x |")
            ratio = speedups["all different"] / speedups["same voice+settings"]
            lines.append(f"| {name} | {clients} | different / same speed-up | | | **{ratio:.2f}** |")
        return lines

    async def short_long(self) -> list[str]:
        lines = []
        for name, scheduler in self.schedulers.items():
            self.model.service.scheduler = scheduler
            # As in issue #14: 12 chunks of 20 words, then a one-sentence request 1 s later.
            long_alone = await self.timed(request(12, voice=2, sentences_per_chunk=2))
            short_alone = await self.timed(request(1, voice=3, seed=1))
            long_task = asyncio.create_task(self.timed(request(12, voice=2, sentences_per_chunk=2)))
            await asyncio.sleep(1.0)
            short_together = await self.timed(request(1, voice=3, seed=1))
            long_together = await long_task
            lines.append(
                f"| {name} | {long_alone:.2f} | {short_alone:.2f} | {short_together:.2f} | {long_together:.2f} "
                f"| {short_together / long_alone:.2f} |"
            )
        return lines

    async def poisson(self, rate: float, duration: float, seed: int) -> list[str]:
        lines = []
        for name, scheduler in self.schedulers.items():
            self.model.service.scheduler = scheduler
            rng = random.Random(seed)  # the same arrivals and requests for both schedulers
            arrivals, at = [], 0.0
            while True:
                at += rng.expovariate(rate)
                if at >= duration:
                    break
                arrivals.append((at, mixed_request(rng)[1]))
            started = time.perf_counter()

            async def client(at: float, req: SynthesisRequest, started: float = started) -> float:
                await asyncio.sleep(max(0.0, at - (time.perf_counter() - started)))
                return await self.timed(req)

            latencies = await asyncio.gather(*(client(at, req) for at, req in arrivals))
            makespan = time.perf_counter() - started
            lines.append(
                f"| {name} | {rate:g} | {len(arrivals)} | {makespan:.1f} | {len(arrivals) / makespan:.3f} "
                f"| {statistics.median(latencies):.2f} | {p95(latencies):.2f} |"
            )
        return lines

    async def capacity(self, clients: int, duration: float, seed: int) -> CapacityPoint:
        """`clients` clients, each sending the Poisson mix back to back for `duration` s (closed loop)."""
        self.model.service.scheduler = self.schedulers["continuous"]
        latencies: list[float] = []
        chunks_done = 0
        signal: list[float] = []
        started = time.perf_counter()
        deadline = started + duration

        async def client(index: int) -> None:
            nonlocal chunks_done
            rng = random.Random(seed * 1000 + index)
            while time.perf_counter() < deadline:
                chunks, req = mixed_request(rng)
                latencies.append(await self.timed(req))
                chunks_done += chunks

        async def sample() -> None:
            while time.perf_counter() < deadline:
                signal.append(sum(REGISTRY.get_sample_value(name) or 0.0 for name in SIGNAL_GAUGES))
                await asyncio.sleep(0.1)

        await asyncio.gather(sample(), *(client(index) for index in range(clients)))
        elapsed = time.perf_counter() - started  # until the last request started before the deadline ended
        return CapacityPoint(
            clients=clients,
            requests_per_s=len(latencies) / elapsed,
            chunks_per_s=chunks_done / elapsed,
            p50_s=statistics.median(latencies),
            p95_s=p95(latencies),
            signal=statistics.fmean(signal) if signal else 0.0,
        )


@dataclass(frozen=True)
class CapacityPoint:
    """One closed-loop level: what a pod completes and how long a request takes at `clients` in flight."""

    clients: int
    requests_per_s: float
    chunks_per_s: float
    p50_s: float
    p95_s: float
    #: Mean of bark_queue_depth + bark_inflight_chunks over the level (the KEDA query, per pod).
    signal: float

    FIELDS: ClassVar[tuple[str, ...]] = ("requests_per_s", "chunks_per_s", "p50_s", "p95_s", "signal")

    def row(self, label: str = "") -> str:
        return (
            f"| {self.clients} | {label} | {self.requests_per_s:.3f} | {self.chunks_per_s:.2f} "
            f"| {self.p50_s:.2f} | {self.p95_s:.2f} | {self.signal:.1f} |"
        )

    @classmethod
    def median(cls, points: list[CapacityPoint]) -> CapacityPoint:
        values = {field: statistics.median(getattr(point, field) for point in points) for field in cls.FIELDS}
        return cls(clients=points[0].clients, **values)


async def run(args: argparse.Namespace) -> None:
    checkpoint = checkpoint_for(args.size, args.cache_dir)
    settings = engine_settings(args, checkpoint, max_queue_chunks=4096)
    model = BarkTTS(settings)
    model.load()
    engine = model.service.engine
    assert engine is not None
    options = {"max_batch_size": args.max_batch_size, "max_queue_chunks": 4096, "max_wait_ms": settings.max_wait_ms}
    schedulers = {
        "static": Scheduler(model.service.run_batch, **options),
        "continuous": ContinuousScheduler(BarkRowEngine(engine, args.max_batch_size), **options),
    }
    if engine.device.type == "cuda":  # as the server's warm-up does: no request pays for a capture
        assert engine.decoder is not None
        engine.decoder.capture_graphs()
        rows = schedulers["continuous"]._engine
        assert isinstance(rows, BarkRowEngine)
        rows.capture_graphs()
    bench = Bench(model, schedulers)
    await bench.timed(request(1))  # warm-up: lazy initialisation, sentence splitter
    print(engine_header(args.size, engine, args.tokens_per_word) + "\n")
    if "concurrency" in args.scenarios:
        print("| scheduler | clients | requests | in a row (s) | together (s) | speed-up |\n|---|---|---|---|---|---|")
        for clients in args.clients:
            print("\n".join(await bench.concurrency(clients)), flush=True)
        print()
    if "short-long" in args.scenarios:
        print(
            "| scheduler | 12-chunk alone (s) | 1-chunk alone (s) | 1-chunk sent 1 s in (s) | 12-chunk then (s) "
            "| short / long-alone |\n|---|---|---|---|---|---|"
        )
        print("\n".join(await bench.short_long()), flush=True)
        print()
    if "poisson" in args.scenarios:
        print(
            "| scheduler | rate (req/s) | requests | makespan (s) | throughput (req/s) | p50 (s) | p95 (s) |\n"
            "|---|---|---|---|---|---|---|"
        )
        for rate in args.rates:
            print("\n".join(await bench.poisson(rate, args.duration, seed=int(rate * 1000))), flush=True)
        print()
    if "capacity" in args.scenarios:
        header = (
            "| clients | round | throughput (req/s) | chunks/s | p50 (s) | p95 (s) | queue + rows (mean) |\n"
            "|---|---|---|---|---|---|---|"
        )
        print(header)
        levels: dict[int, list[CapacityPoint]] = {clients: [] for clients in args.concurrency}
        for round_index in range(args.rounds):
            for clients in args.concurrency:
                point = await bench.capacity(clients, args.duration, seed=round_index * 100 + clients)
                levels[clients].append(point)
                print(point.row(str(round_index + 1)), flush=True)
        print(f"\nMedians of {args.rounds} rounds:\n\n{header}")
        for points in levels.values():
            print(CapacityPoint.median(points).row("median"))
    for scheduler in schedulers.values():
        await scheduler.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--scenarios", nargs="+", default=["concurrency", "short-long", "poisson"])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of Poisson arrivals per rate, or of one capacity level"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="capacity: clients")
    parser.add_argument("--rounds", type=int, default=3, help="capacity: rounds over all levels (medians reported)")
    asyncio.run(run(parse_engine_args(parser, argv)))


def engine_settings(args: argparse.Namespace, checkpoint: Path, **overrides: Any) -> Settings:
    """The server's settings for a benchmark of the options `parse_engine_args` reads: no warm-up unless
    `overrides` asks, and every chunk capped by its words alone (random weights never emit EOS)."""
    defaults: dict[str, Any] = {"warmup": False}
    return Settings(
        model_dir=checkpoint,
        device=args.device,
        max_batch_size=args.max_batch_size,
        semantic_tokens_per_word=args.tokens_per_word,
        semantic_tokens_min=1,
        **{**defaults, **overrides},
    )


@contextlib.asynccontextmanager
async def warmed_service(args: argparse.Namespace) -> AsyncIterator[SynthesisService]:
    """The synthesis service on the continuous scheduler for the options `parse_engine_args` reads,
    after one short request (lazy initialisation); closed afterwards."""
    settings = engine_settings(args, checkpoint_for(args.size, args.cache_dir), scheduler="continuous")
    service = SynthesisService.load(settings)
    try:
        await service.synthesize(SynthesisRequest(prompt="Warm up.", do_sample=False))
        yield service
    finally:
        await service.close()


def parse_engine_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, max_batch_size: int = 32
) -> argparse.Namespace:
    """Parse `argv` with the options every service-level benchmark shares (token budget, rows,
    threads, device, checkpoint cache), and apply `--threads`."""
    parser.add_argument("--tokens-per-word", type=float, default=10.0, help="semantic token budget per word")
    parser.add_argument("--max-batch-size", type=int, default=max_batch_size)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


if __name__ == "__main__":
    main()
