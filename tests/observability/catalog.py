"""Which metric names exist, and which ones a PromQL expression uses.

The dashboard and the alert rules may only name series that something really exports: the model
server (`model_server/metrics.py`, the source of truth), the webhook sidecar, KServe, or Prometheus
and kube-state-metrics themselves. A typo then fails a test instead of showing "No data".
"""

from __future__ import annotations

import functools
import importlib
import re
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase

from model_server import metrics as server_metrics

#: The webhook sidecar's metrics (webhook_sidecar/metrics.py), used while that package is absent.
#: When it is importable, its real registry is read instead, so a rename there fails here.
SIDECAR_METRICS: dict[str, str] = {
    "bark_jobs": "gauge",
    "bark_job_transitions": "counter",
    "bark_webhook_delivery_attempts": "counter",
    "bark_webhook_delivery_latency_seconds": "histogram",
}

#: KServe's own per-model histograms (kserve/metrics.py), served on the same /metrics.
KSERVE_METRICS = {
    f"request_{step}_seconds{suffix}"
    for step in ("preprocess", "predict", "postprocess", "explain")
    for suffix in ("_bucket", "_count", "_sum")
}
#: Series Prometheus makes itself; `kube_*` (kube-state-metrics) is allowed by prefix.
STANDARD_METRICS = {"up", "ALERTS", "ALERTS_FOR_STATE"}
STANDARD_PREFIXES = ("kube_",)

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
}


def _families_of(module: ModuleType) -> dict[str, str]:
    """{family name: type} of every prometheus_client metric defined at module level."""
    families: dict[str, str] = {}
    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                families[family.name] = family.type
    return families


def _sample_names(families: dict[str, str]) -> set[str]:
    names: set[str] = set()
    for family, kind in families.items():
        # prometheus_client names a counter family without `_total`; its series carry it.
        names.update(family + suffix for suffix in _SUFFIXES[kind])
    return names


def server_families() -> dict[str, str]:
    return _families_of(server_metrics)


@functools.cache
def server_sample_names() -> frozenset[str]:
    """Every series name the model server exports under `bark_*`."""
    return frozenset(_sample_names(server_families()))


@functools.cache
def sidecar_families() -> dict[str, str]:
    """{family name: type} of the sidecar's `bark_*` metrics; they live on a per-app registry."""
    try:
        module = importlib.import_module("webhook_sidecar.metrics")
    except ModuleNotFoundError:
        return dict(SIDECAR_METRICS)
    registry = module.SidecarMetrics().registry
    return {family.name: family.type for family in registry.collect() if family.name.startswith("bark_")}


@functools.cache
def sidecar_sample_names() -> frozenset[str]:
    return frozenset(_sample_names(sidecar_families()))


def is_known(name: str) -> bool:
    return (
        name in server_sample_names()
        or name in sidecar_sample_names()
        or name in KSERVE_METRICS
        or name in STANDARD_METRICS
        or name.startswith(STANDARD_PREFIXES)
    )


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
_KEYWORDS |= {"offset", "inf", "nan"}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group()
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 5m, 0.5
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if token.lower() in _KEYWORDS:
            continue
        names.add(token)
    return names
