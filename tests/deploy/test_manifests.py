"""manifests/ is the default render for kubectl users, and CI notices when it is stale."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml
from deploy_helpers import REPO, Helm, container, env_of, kinds

SCRIPT = REPO / "scripts" / "render-manifests.sh"
MANIFEST = REPO / "manifests" / "bark-tts.yaml"


def run_script(helm: Helm, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM": helm.binary}
    return subprocess.run(
        ["bash", str(root / "scripts" / "render-manifests.sh"), *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_checked_in_manifests_are_up_to_date(helm: Helm) -> None:
    result = run_script(helm, REPO, "--check")
    assert result.returncode == 0, result.stderr


def test_check_fails_with_a_diff_when_the_chart_changed(helm: Helm, tmp_path: Path) -> None:
    for part in ("charts", "scripts", "manifests"):
        shutil.copytree(REPO / part, tmp_path / part)
    values = tmp_path / "charts" / "bark-tts" / "values.yaml"
    values.write_text(values.read_text().replace("maxReplicas: 2", "maxReplicas: 5"))
    result = run_script(helm, tmp_path, "--check")
    assert result.returncode == 1
    assert "+    maxReplicas: 5" in result.stderr
    assert "is stale" in result.stderr
    assert run_script(helm, tmp_path).returncode == 0  # regenerating fixes it
    assert run_script(helm, tmp_path, "--check").returncode == 0


def test_manifests_hold_no_generated_secret_and_reference_the_users_one() -> None:
    objects = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    # The model, its NetworkPolicies and PodDisruptionBudget, the job API Service, and the bundled
    # PostgreSQL for the sidecars' shared job store.
    assert kinds(objects) == [
        "InferenceService",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "StatefulSet",
    ]
    env = env_of(container(objects, "kserve-container"))
    assert env["HF_TOKEN"]["secretKeyRef"]["name"] == "bark-tts-secrets"
    sidecar_env = env_of(container(objects, "webhook-sidecar"))
    assert sidecar_env["PGPASSWORD"]["secretKeyRef"] == {"name": "bark-tts-secrets", "key": "postgres-password"}
    text = MANIFEST.read_text()
    assert "keys: api-keys, webhook-secret, postgres-password" in text
    assert "kubectl apply -n <namespace> -f manifests/bark-tts.yaml" in MANIFEST.read_text()
