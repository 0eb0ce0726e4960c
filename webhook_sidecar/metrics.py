"""Prometheus metrics of the sidecar (prefix `bark_`), on its own registry served at `/metrics`.

`bark_jobs{state,store}` is read from the store at scrape time, so it is right after a restart too;
with `store="postgres"` every replica reports the whole shared store (aggregate with max, not sum),
with `store="sqlite"` each pod its own file (sum). The counters count what this process did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

#: What one delivery attempt ended in.
DELIVERY_OUTCOMES = ("delivered", "retry", "rejected", "blocked", "gave_up")
# From result to receiver: seconds when all is well, up to the retry window when a receiver is down.
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)


class _JobStates(Collector):
    def __init__(self) -> None:
        self.counts: Callable[[], Mapping[str, int]] | None = None
        self.store = "sqlite"

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "bark_jobs",
            "Jobs in the store by state; store=postgres: the shared store (the same on every replica).",
            labels=["state", "store"],
        )
        try:
            counts = self.counts() if self.counts is not None else {}
        except Exception:  # closed (shutting down) or unreachable: no series rather than a failed scrape
            counts = {}
        for state, count in counts.items():
            family.add_metric([state, self.store], count)
        yield family


class SidecarMetrics:
    """One set per app (tests start several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._states = _JobStates()
        self.registry.register(self._states)
        self.transitions = Counter(
            "bark_job_transitions_total",
            "Job state changes, by the state entered.",
            ["state"],
            registry=self.registry,
        )
        self.cancelled = Counter(
            "bark_jobs_cancelled_total",
            "Jobs this sidecar moved to `cancelled` at their caller's request (a queued one when it took the "
            "DELETE, a running one when it stopped the run).",
            registry=self.registry,
        )
        self.delivery_attempts = Counter(
            "bark_webhook_delivery_attempts_total",
            "Webhook delivery attempts by outcome (rejected: a final 4xx; blocked: unsafe address; "
            "gave_up: retryable but out of attempts).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in DELIVERY_OUTCOMES:
            self.delivery_attempts.labels(outcome)
        self.delivery_latency = Histogram(
            "bark_webhook_delivery_latency_seconds",
            "Seconds from a job's result (success or failure) to its acknowledged delivery.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def read_states_from(self, counts: Callable[[], Mapping[str, int]], store: str = "sqlite") -> None:
        self._states.counts = counts
        self._states.store = store

    def count_transition(self, state: str) -> None:
        self.transitions.labels(state).inc()
        if state == "cancelled":
            self.cancelled.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
