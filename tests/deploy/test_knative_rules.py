"""Serverless renders obey Knative's pod-spec rules, and docs/DEPLOY.md names every flag they need.

Knative's admission webhook refuses pod fields outside its API unless a `config-features` flag
allows them, and allows a declared port on one container only. No Knative runs here, so these
rules (from Knative Serving's field masks and feature-flag docs) are checked on the render.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from deploy_helpers import CHART, REPO, VARIANTS, only, predictor

POD_FIELD_FLAGS = {
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations",
    "affinity": "kubernetes.podspec-affinity",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
}
# Allowed without any flag (seccompProfile since Knative 1.8).
POD_SECURITY_FREE = {"seccompProfile"}
CONTAINER_SECURITY_FREE = {
    "runAsUser", "runAsNonRoot", "readOnlyRootFilesystem", "capabilities",
    "allowPrivilegeEscalation", "seccompProfile",
}  # fmt: skip
SECURITY_FLAG = "kubernetes.podspec-securitycontext"


def knative_flags_needed(pred: dict[str, Any]) -> set[str]:
    """The config-features flags a predictor pod spec needs; asserts the rules no flag lifts."""
    flags = {flag for field, flag in POD_FIELD_FLAGS.items() if pred.get(field)}
    if set(pred.get("securityContext", {})) - POD_SECURITY_FREE:
        flags.add(SECURITY_FLAG)
    containers = pred["containers"]
    assert containers[0]["name"] == "kserve-container"
    assert [c["name"] for c in containers if c.get("ports")] == ["kserve-container"]
    assert len(containers[0]["ports"]) == 1
    mounts = {m["name"]: m for c in containers for m in c.get("volumeMounts", [])}
    for c in containers:
        security = c.get("securityContext", {})
        if set(security) - CONTAINER_SECURITY_FREE or security.get("runAsNonRoot") is False:
            flags.add(SECURITY_FLAG)
        assert not security.get("capabilities", {}).get("add"), "adding capabilities needs its own flag"
        if c is not containers[0] and ("readinessProbe" in c or "livenessProbe" in c):
            flags.add("multi-container-probing")
    for volume in pred.get("volumes", []):
        if "emptyDir" in volume:
            flags.add("kubernetes.podspec-volumes-emptydir")
        if "persistentVolumeClaim" in volume:
            flags.add("kubernetes.podspec-persistent-volume-claim")
            if not mounts[volume["name"]].get("readOnly"):
                flags.add("kubernetes.podspec-persistent-volume-write")
    return flags


def documented_flags() -> set[str]:
    text = (REPO / "docs" / "DEPLOY.md").read_text()
    patch = text[text.index("patch configmap config-features") :]
    patch = patch[: patch.index("}}'")]
    return set(re.findall(r'"([a-z.-]+)": "enabled"', patch))


SERVERLESS = [
    v
    for v in VARIANTS
    if v == "default" or "deploymentMode: RawDeployment" not in (CHART / "ci" / f"{v}.yaml").read_text()
]


@pytest.mark.parametrize("variant", SERVERLESS)
def test_serverless_variants_need_only_documented_knative_flags(
    renders: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    objects = renders[variant]
    annotations = only(objects, "InferenceService")["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    assert knative_flags_needed(predictor(objects)) <= documented_flags()


def test_the_default_install_needs_only_node_selector_and_tolerations(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    assert knative_flags_needed(predictor(renders["default"])) == {
        "kubernetes.podspec-nodeselector",
        "kubernetes.podspec-tolerations",
    }


def test_the_rules_catch_a_second_port_and_pod_level_run_as_user(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    pred = predictor(renders["raw-deployment-values"])  # the sidecar declares its port here
    with pytest.raises(AssertionError):
        knative_flags_needed(pred)
    pred = copy.deepcopy(predictor(renders["default"]))
    pred["securityContext"]["runAsUser"] = 1000
    assert SECURITY_FLAG in knative_flags_needed(pred)
