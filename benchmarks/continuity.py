"""What `continuity: "previous"` costs: a long text whose voice carries from chunk to chunk, against
the default (every chunk from the voice preset).

With "previous" each chunk's history is the previous chunk's tokens, so a voice's chunks run one
after another instead of side by side: the request takes about the sum of its chunks' times rather
than the longest batch of them. Measured through `SynthesisService.synthesize` (planning, the
continuous scheduler, joining) as the HTTP routes run it, without HTTP:

  alone        the request by itself: preset vs previous
  beside load  the same request while `--others` default requests of the same text run at once:
               its own wall time, and the whole wave's (what the batch loses or keeps)

Each figure is the median of `--repeats` runs, preset and previous alternating. Random weights never
emit EOS: every chunk runs to its budget (`--tokens-per-word` x its words). The machine is shared and
noisy: compare ratios within one run.

Usage:
  python benchmarks/continuity.py --size tiny
  python benchmarks/continuity.py --size tiny --sentences 12 --others 3 --repeats 5
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

from continuous_load import parse_engine_args, warmed_service  # noqa: E402  (this folder is on sys.path when run as a script)
from decode_steps import engine_header  # noqa: E402

from bark_common.schema import SynthesisRequest  # noqa: E402
from model_server.synthesis import SynthesisService  # noqa: E402

SENTENCES = [
    "The lighthouse keeper climbed the stairs every evening at dusk.",
    "He polished the great lens until it shone like water.",
    "Ships far out at sea looked for his light and turned for home.",
    "One winter the storms did not stop for a whole month.",
    "He kept the lamp burning through every single night.",
    "When spring came, the village brought him bread and honey.",
    "He thanked them and went back up the stairs to sleep.",
    "The sea was calm again, and the light kept turning.",
]


def text(sentences: int) -> str:
    return " ".join(SENTENCES[index % len(SENTENCES)] for index in range(sentences))


async def timed(service: SynthesisService, request: SynthesisRequest) -> float:
    started = time.perf_counter()
    await service.synthesize(request)
    return time.perf_counter() - started


async def measure(service: SynthesisService, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Wall seconds: alone, beside load (the request's own), and the whole wave, per continuity."""
    spoken = text(args.sentences)
    common = {"prompt": spoken, "seed": 4242, "batch_chunk_size": args.chunk_words}
    others = [SynthesisRequest(**common, voice="v2/en_speaker_6") for _ in range(args.others)]
    figures: dict[str, dict[str, list[float]]] = {}
    for repeat in range(args.repeats):
        for continuity in ("preset", "previous") if repeat % 2 == 0 else ("previous", "preset"):
            request = SynthesisRequest(**common, voice="v2/en_speaker_1", continuity=continuity)
            runs = figures.setdefault(continuity, {"alone": [], "beside load": [], "wave": []})
            runs["alone"].append(await timed(service, request))
            started = time.perf_counter()
            own, *_ = await asyncio.gather(timed(service, request), *(timed(service, other) for other in others))
            runs["beside load"].append(own)
            runs["wave"].append(time.perf_counter() - started)
    return figures


async def run(args: argparse.Namespace) -> None:
    async with warmed_service(args) as service:
        chunks = len(
            service.plan(SynthesisRequest(prompt=text(args.sentences), batch_chunk_size=args.chunk_words)).chunks
        )
        figures = await measure(service, args)
    engine = service.engine
    print(
        engine_header(args.size, engine, args.tokens_per_word) + ", "
        f"{args.sentences} sentences in {chunks} chunks, {args.others} other requests beside it, "
        f"{args.repeats} repeats\n"
    )
    print("| measure | preset, median (s) | previous, median (s) | previous / preset |\n|---|---|---|---|")
    for measure_name in ("alone", "beside load", "wave"):
        preset = statistics.median(figures["preset"][measure_name])
        previous = statistics.median(figures["previous"][measure_name])
        print(f"| {measure_name} | {preset:.2f} | {previous:.2f} | **{previous / preset:.2f}x** |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--chunk-words", type=int, default=12, help="batch_chunk_size: words per chunk")
    parser.add_argument("--others", type=int, default=3, help="default requests running beside the measured one")
    parser.add_argument("--repeats", type=int, default=3)
    asyncio.run(run(parse_engine_args(parser, argv)))


if __name__ == "__main__":
    main()
