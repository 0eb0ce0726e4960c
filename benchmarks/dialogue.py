"""A two-voice dialogue vs the same text in one voice: does a dialogue cost more than a monologue?

All turns' chunks are queued at once and the continuous engine steps rows of any voice together, so
a dialogue should take about as long as one voice saying the same words (issue 24: at most 1.1x).
Three requests of the same words, same seed policy, through `SynthesisService.synthesize` (planning,
the continuous scheduler, joining, timestamps) as the HTTP routes do, without HTTP:

  dialogue       `--turns` turns alternating between two voices, one or two sentences each
  same turns     the same turns, every one in the first voice (the same chunks: only the voices differ)
  one prompt     the turns' texts joined into one prompt in the first voice (packed into fewer,
                 longer chunks, as a monologue would be)

Each is run `--repeats` times in rotating order; the medians and their ratios are printed. Random
weights never emit EOS: every chunk runs to its budget (`--tokens-per-word` x its words). The machine
is shared and noisy: compare ratios within one run.

Usage:
  python benchmarks/dialogue.py --size tiny
  python benchmarks/dialogue.py --size tiny --seed-policy greedy --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from continuous_load import parse_engine_args, warmed_service  # noqa: E402  (this folder is on sys.path when run as a script)
from decode_steps import engine_header  # noqa: E402

from bark_common.schema import SynthesisRequest  # noqa: E402
from model_server.synthesis import SynthesisService  # noqa: E402

VOICES = ("v2/en_speaker_1", "v2/en_speaker_6")
LINES = [
    "Did you see the boats come in this morning?",
    "I did. The harbor was full before the sun was up.",
    "The fishermen say the catch was the best in years.",
    "That explains the crowd at the market. Everyone wanted fresh fish.",
    "My uncle sold his whole boat load before nine.",
    "Lucky him. I only managed to buy two small ones.",
    "Will you cook them tonight, or keep them for tomorrow?",
    "Tonight, with lemon and a little butter. Come over if you like.",
    "I would love to. Shall I bring some bread along?",
    "Yes, please. And bring your sister too, if she is free.",
]
SEED_POLICIES: dict[str, dict[str, Any]] = {
    "seeded": {"do_sample": True, "seed": 1234},
    "greedy": {"do_sample": False},
    "unseeded": {"do_sample": True},
}


def requests(turns: int, policy: str) -> dict[str, SynthesisRequest]:
    lines = [LINES[index % len(LINES)] for index in range(turns)]
    sampling = SEED_POLICIES[policy]
    return {
        "dialogue": SynthesisRequest(
            turns=[{"voice": VOICES[index % 2], "text": line} for index, line in enumerate(lines)], **sampling
        ),
        "same turns": SynthesisRequest(turns=[{"voice": VOICES[0], "text": line} for line in lines], **sampling),
        "one prompt": SynthesisRequest(prompt=" ".join(lines), voice=VOICES[0], **sampling),
    }


async def measure(service: SynthesisService, named: dict[str, SynthesisRequest], repeats: int) -> dict[str, Any]:
    """Wall seconds per request (rotating which goes first), and each one's chunks and audio seconds."""
    walls: dict[str, list[float]] = {name: [] for name in named}
    shape: dict[str, tuple[int, float]] = {}
    names = list(named)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            started = time.perf_counter()
            result = await service.synthesize(named[name])
            walls[name].append(time.perf_counter() - started)
            shape[name] = (result.chunks, len(result.waveform) / service.sample_rate)
    return {name: (statistics.median(walls[name]), walls[name], *shape[name]) for name in names}


async def run(args: argparse.Namespace) -> None:
    async with warmed_service(args) as service:
        figures = await measure(service, requests(args.turns, args.seed_policy), args.repeats)
    engine = service.engine
    print(
        engine_header(args.size, engine, args.tokens_per_word) + ", "
        f"{args.turns} turns, seed policy {args.seed_policy}, {args.repeats} repeats\n"
    )
    print("| request | chunks | audio (s) | wall, median (s) | runs (s) |\n|---|---|---|---|---|")
    for name, (median, walls, chunks, audio_s) in figures.items():
        runs = ", ".join(f"{wall:.2f}" for wall in walls)
        print(f"| {name} | {chunks} | {audio_s:.2f} | {median:.2f} | {runs} |")
    dialogue = figures["dialogue"][0]
    print(
        f"\ndialogue / one prompt: **{dialogue / figures['one prompt'][0]:.2f}x**; "
        f"dialogue / same turns in one voice: **{dialogue / figures['same turns'][0]:.2f}x**"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seed-policy", choices=sorted(SEED_POLICIES), default="seeded")
    parser.add_argument("--repeats", type=int, default=3)
    asyncio.run(run(parse_engine_args(parser, argv)))


if __name__ == "__main__":
    main()
