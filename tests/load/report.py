"""A bounded overload: more concurrent requests than the queue holds, on loopback.

`run_overload` sends a fixed number of requests from a pool of threads, their starts spread evenly
over a few seconds so that the queue fills, drains and fills again (no retries), and reports
what happened: accepted (200), rejected (503, each with Retry-After), failed (anything else: a
5xx, a timeout, a dropped connection), latency, and the server's resident memory before, at peak
and after. The test (`test_overload.py`) asserts on the report; run as a script, this module starts
a server with a small queue, runs the same load and prints the report (benchmarks/RESULTS.md).

    python -m tests.load.report [--requests 60] [--threads 24] [--spread 6]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

PREDICT = "/v1/models/bark:predict"

#: A small queue (two requests' worth of chunks) and short generation: most of a burst is refused.
OVERLOAD_ENV = {
    "BARK_MAX_QUEUE_CHUNKS": "8",
    "BARK_MAX_BATCH_SIZE": "4",
    "BARK_SEMANTIC_TOKENS_PER_WORD": "3",
    "BARK_SEMANTIC_TOKENS_MIN": "6",
    "BARK_RETRY_AFTER_S": "1",
}

#: Four chunks at 8 words a chunk.
BODY = {
    "instances": [
        {
            "prompt": " ".join(["Here is one more sentence with eight words."] * 4),
            "batch_chunk_size": 8,
            "do_sample": False,
        }
    ]
}


@dataclass
class OverloadReport:
    tried: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    rejected_without_retry_after: int = 0
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    p50_accepted_s: float = 0.0
    p95_accepted_s: float = 0.0
    p95_all_s: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    rss_peak_mb: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"requests tried     {self.tried}",
            f"accepted (200)     {self.accepted}",
            f"rejected (503)     {self.rejected}  (without Retry-After: {self.rejected_without_retry_after})",
            f"failed             {self.failed}",
            f"wall               {self.wall_s:.2f} s",
            f"latency accepted   p50 {self.p50_accepted_s:.2f} s, p95 {self.p95_accepted_s:.2f} s",
            f"latency all        p95 {self.p95_all_s:.2f} s",
            f"server RSS         before {self.rss_before_mb:.0f} MB, peak {self.rss_peak_mb:.0f} MB, "
            f"after {self.rss_after_mb:.0f} MB",
        ]


def memory_mb(pid: int, field_name: str) -> float:
    """A memory line of /proc/<pid>/status in MB: VmRSS now, VmHWM the peak since start."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field_name)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_overload(
    url: str, pid: int, requests: int, threads: int, timeout_s: float, spread_s: float = 6.0
) -> OverloadReport:
    """Send `requests` requests from `threads` threads, request i starting at i * spread_s / requests.

    Every request is answered (200 or 503) or counted as failed; none is retried.
    """
    report = OverloadReport(tried=requests, rss_before_mb=memory_mb(pid, "VmRSS"))
    accepted_latency: list[float] = []
    all_latency: list[float] = []
    begin = time.monotonic()

    def one(index: int) -> tuple[str, float, str]:
        time.sleep(max(0.0, begin + index * spread_s / requests - time.monotonic()))
        started = time.monotonic()
        try:
            with httpx.Client(timeout=timeout_s) as client:
                response = client.post(url + PREDICT, json=BODY)
        except httpx.HTTPError as error:
            return "failed", time.monotonic() - started, f"{type(error).__name__}: {error}"
        elapsed = time.monotonic() - started
        if response.status_code == 200 and response.json()["predictions"][0]["chunks"] == 4:
            return "accepted", elapsed, ""
        if response.status_code == 503:
            return ("rejected" if response.headers.get("retry-after") else "rejected-bare"), elapsed, ""
        return "failed", elapsed, f"{response.status_code}: {response.text[:200]}"

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for outcome, elapsed, detail in pool.map(one, range(requests)):
            all_latency.append(elapsed)
            if outcome == "accepted":
                report.accepted += 1
                accepted_latency.append(elapsed)
            elif outcome.startswith("rejected"):
                report.rejected += 1
                report.rejected_without_retry_after += outcome == "rejected-bare"
            else:
                report.failed += 1
                report.failures.append(detail)
    report.wall_s = time.monotonic() - begin
    report.p50_accepted_s = percentile(accepted_latency, 0.5)
    report.p95_accepted_s = percentile(accepted_latency, 0.95)
    report.p95_all_s = percentile(all_latency, 0.95)
    report.rss_after_mb = memory_mb(pid, "VmRSS")
    report.rss_peak_mb = memory_mb(pid, "VmHWM")
    return report


def main() -> None:
    from model_server.tiny import build_checkpoint
    from tests.serving import running_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--threads", type=int, default=24)
    parser.add_argument("--spread", type=float, default=6.0, help="seconds over which the requests start")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_checkpoint(Path(folder) / "tiny")
        with running_server(checkpoint, Path(folder), env=OVERLOAD_ENV) as server:
            report = run_overload(
                server.url, server.process.pid, args.requests, args.threads, args.timeout, args.spread
            )
    print(json.dumps(asdict(report), indent=2) if args.json else "\n".join(report.lines()))


if __name__ == "__main__":
    main()
