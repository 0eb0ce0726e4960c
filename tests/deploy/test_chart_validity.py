"""The chart lints, renders, and every object it renders is one the API server would accept."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from typing import Any

import pytest
from crd_schema import load_crd_schema
from deploy_helpers import CHART, CRD_PATH, KEDA_CRDS, VARIANTS, Helm, require_executable, require_module, values_args

# Kubernetes version the core kinds are checked against (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.32.0"
CORE_KINDS = {
    "Secret",
    "ConfigMap",
    "Service",
    "PersistentVolumeClaim",
    "StatefulSet",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
# Custom kinds: InferenceService is checked against KServe's CRD, ScaledObject and
# TriggerAuthentication against KEDA's; the others (no CRD offline) by the assertions in
# test_chart_objects.py.
CUSTOM_KINDS = {"InferenceService", "ServiceMonitor", "PodMonitor", "PrometheusRule", "Trigger", *KEDA_CRDS}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict_passes(helm: Helm, variant: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), *values_args(variant))
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_is_a_valid_draft7_schema() -> None:
    jsonschema = require_module("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)


@pytest.fixture(scope="module")
def isvc_validator() -> Any:
    jsonschema = require_module("jsonschema")
    assert CRD_PATH.is_file(), f"KServe CRD not found at {CRD_PATH} (vendored in third_party/kserve/)"
    return jsonschema.Draft202012Validator(load_crd_schema(CRD_PATH))


def describe(errors: list[Any]) -> str:
    return "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_inference_service_matches_the_kserve_crd(
    renders: dict[str, list[dict[str, Any]]], isvc_validator: Any, variant: str
) -> None:
    services = [o for o in renders[variant] if o["kind"] == "InferenceService"]
    assert len(services) == 1
    for isvc in services:
        errors = list(isvc_validator.iter_errors(isvc))
        assert not errors, describe(errors)


def test_the_crd_check_catches_an_unknown_field_and_a_string_replica_count(
    renders: dict[str, list[dict[str, Any]]], isvc_validator: Any
) -> None:
    (isvc,) = [copy.deepcopy(o) for o in renders["default"] if o["kind"] == "InferenceService"]
    isvc["spec"]["predictor"]["containers"][0]["gpus"] = 1
    isvc["spec"]["predictor"]["maxReplicas"] = "2"
    isvc["metadata"]["annotations"]["prometheus.io/port"] = 8080
    paths = {"/".join(map(str, e.absolute_path)) for e in isvc_validator.iter_errors(isvc)}
    assert paths == {
        "spec/predictor/containers/0",
        "spec/predictor/maxReplicas",
        "metadata/annotations/prometheus.io/port",
    }


@pytest.fixture(scope="module")
def keda_validators() -> dict[str, Any]:
    jsonschema = require_module("jsonschema")
    return {
        kind: jsonschema.Draft202012Validator(load_crd_schema(path, version))
        for kind, (path, version) in KEDA_CRDS.items()
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_keda_object_matches_the_keda_crds(
    renders: dict[str, list[dict[str, Any]]], keda_validators: dict[str, Any], variant: str
) -> None:
    for obj in renders[variant]:
        if obj["kind"] in keda_validators:
            errors = list(keda_validators[obj["kind"]].iter_errors(obj))
            assert not errors, f"{obj['kind']} {obj['metadata']['name']}: {describe(errors)}"


def test_the_keda_crd_check_catches_a_numeric_threshold_and_an_unknown_field(
    renders: dict[str, list[dict[str, Any]]], keda_validators: dict[str, Any]
) -> None:
    scaled = copy.deepcopy(next(o for o in renders["keda-values"] if o["kind"] == "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 32  # trigger metadata is strings only
    scaled["spec"]["maxReplicas"] = 4  # the field is maxReplicaCount
    paths = {"/".join(map(str, e.absolute_path)) for e in keda_validators["ScaledObject"].iter_errors(scaled)}
    assert paths == {"spec/triggers/0/metadata/threshold", "spec"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_core_objects_validate_against_kubernetes_schemas(
    renders: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    kv = require_module("kubernetes_validate")
    objects = renders[variant]
    unknown = {o["kind"] for o in objects} - CORE_KINDS - CUSTOM_KINDS
    assert not unknown, f"add {unknown} to a validation list"
    for obj in objects:
        if obj["kind"] in CORE_KINDS:
            try:
                kv.validate(obj, KUBERNETES_VERSION, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {e.message} at {list(e.path)}")


def test_kubernetes_validate_rejects_a_malformed_service() -> None:
    kv = require_module("kubernetes_validate")
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "eighty"}], "selector": {"a": "b"}},
    }
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_objects_carry_standard_labels_and_no_namespace(renders: dict[str, list[dict[str, Any]]], variant: str) -> None:
    # No hard-coded namespace: `kubectl apply -n <ns> -f manifests/` must work.
    for obj in renders[variant]:
        meta = obj["metadata"]
        assert "namespace" not in meta, obj["kind"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "bark-tts", obj["kind"]
        assert meta["labels"]["app.kubernetes.io/name"] == "bark-tts", obj["kind"]


YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable,"
    " comments: {min-spaces-from-content: 1}, indentation: {indent-sequences: whatever}}}"
)


def test_values_variants_and_manifests_pass_yamllint() -> None:
    targets = [CHART / "Chart.yaml", CHART / "values.yaml", CHART / "ci", CHART.parents[1] / "manifests"]
    result = subprocess.run(
        [require_executable("yamllint"), "-f", "parsable", "-d", YAMLLINT_CONFIG, *map(str, targets)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_keda_crds_are_vendored_unchanged_with_their_license_and_origin() -> None:
    folder = next(iter(KEDA_CRDS.values()))[0].parent
    assert "Apache License" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "github.com/kedacore/keda" in readme
    for path, _version in KEDA_CRDS.values():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}` `{digest}`" in readme, f"{path.name}: not the file README.md names"
