"""Shared helpers for the deploy tests: helm, the chart, its variants, tool lookup.

The tools come from `bash scripts/install-tools.sh`. Without them these tests skip locally but fail
under CI (the CI env var is set), so a CI run can never pass by skipping the deploy checks.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "bark-tts"
# Vendored with its license (third_party/kserve/README.md says where and which version it came from).
CRD_PATH = REPO / "third_party" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
# KEDA's, likewise (third_party/keda/README.md): kind -> (CRD file, served version).
KEDA_CRDS = {
    "ScaledObject": (REPO / "third_party" / "keda" / "keda.sh_scaledobjects.yaml", "v1alpha1"),
    "TriggerAuthentication": (REPO / "third_party" / "keda" / "keda.sh_triggerauthentications.yaml", "v1alpha1"),
}
RELEASE = "bark-tts"
NAMESPACE = "default"
# Every variant the docs describe: the defaults plus each ci/*.yaml file.
VARIANTS = ["default", *sorted(p.stem for p in (CHART / "ci").glob("*.yaml"))]


def missing_tool(what: str) -> None:
    """Fail under CI, skip locally: a missing validator must never turn CI green."""
    message = f"{what} missing: run `bash scripts/install-tools.sh` (PATH must include .tools/bin)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing_tool(f"Python package {name}")
        raise  # unreachable: missing_tool raises


def require_executable(name: str) -> str:
    # .tools/bin (helm), this Python's scripts (hadolint, yamllint), then PATH.
    dirs = [str(REPO / ".tools" / "bin"), sysconfig.get_path("scripts"), os.environ.get("PATH", "")]
    search = os.pathsep.join(dirs)
    path = shutil.which(name, path=search)
    if path is None:
        missing_tool(name)
    return str(path)


#: Offline renders (no cluster for `lookup`) must opt in to generated secrets (see test_chart_jobs.py).
OFFLINE = ["--set", "secrets.generateWithoutCluster=true"]


def values_args(variant: str) -> list[str]:
    return OFFLINE + ([] if variant == "default" else ["-f", str(CHART / "ci" / f"{variant}.yaml")])


@dataclass(frozen=True)
class Helm:
    binary: str

    def run(self, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)

    def template(self, *args: str, chart: Path = CHART, offline: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm template`; `offline`: with secrets.generateWithoutCluster (most tests render without a cluster)."""
        return self.run("template", RELEASE, str(chart), "--namespace", NAMESPACE, *(OFFLINE if offline else []), *args)

    def render(self, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
        """The rendered objects; asserts that helm succeeded."""
        result = self.template(*args, chart=chart)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of a kind (asserts there is exactly one)."""
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def predictor(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return only(objects, "InferenceService")["spec"]["predictor"]


def container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (match,) = [c for c in predictor(objects)["containers"] if c["name"] == name]
    return match


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or name -> valueFrom for references."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def render_notes(helm: Helm, tmp_path: Path, *args: str) -> str:
    """NOTES.txt rendered with the chart's own helpers (`helm template` skips NOTES)."""
    chart = tmp_path / "bark-tts"
    shutil.copytree(CHART, chart)
    (chart / "notes").mkdir()
    shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes" / "NOTES.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'kind: RenderedNotes\nnotes: {{ tpl (.Files.Get "notes/NOTES.txt") . | toJson }}\n'
    )
    result = helm.template("--show-only", "templates/zz-notes.yaml", *args, chart=chart)
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["notes"])
