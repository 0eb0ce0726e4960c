"""The chart around the job sidecar (issue #22): secrets kept or a clear failure, NetworkPolicies, Recreate
with SQLite, the model's limits and the intake caps given to the sidecar."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from deploy_helpers import Helm, only, predictor, values_args
from fake_apiserver import fake_apiserver


def sidecar_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = predictor(objects)["containers"]
    (sidecar,) = [c for c in containers if c["name"] == "webhook-sidecar"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}


def policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}


def test_helm_template_without_a_cluster_fails_instead_of_rotating_the_generated_secrets(helm: Helm) -> None:
    result = helm.template(offline=False)
    assert result.returncode != 0
    message = result.stderr
    assert "would change at every render" in message
    for generated in ("api-keys (secrets.apiKeys)", "webhook-secret", "postgres-password"):
        assert generated in message
    assert "Set secrets.existingSecret to a Secret you manage" in message


def test_an_existing_secret_or_given_values_render_without_a_cluster(helm: Helm) -> None:
    assert helm.template("--set", "secrets.existingSecret=mine", offline=False).returncode == 0
    given = (
        "secrets.apiKeys={key-one-0123456789},secrets.webhookSecret=whsec-0123456789abcdef,"
        "jobs.postgres.bundled.password=database-password-0123"
    )
    result = helm.template("--set", given, offline=False)
    assert result.returncode == 0, result.stderr


def test_a_first_install_on_a_cluster_generates_its_secrets(helm: Helm, tmp_path: Path) -> None:
    with fake_apiserver([], tmp_path) as kubeconfig:
        result = helm.template("--dry-run=server", "--kubeconfig", str(kubeconfig), offline=False)
    assert result.returncode == 0, result.stderr
    secret = only([d for d in yaml.safe_load_all(result.stdout) if d], "Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert len(data["api-keys"]) >= 32 and len(data["webhook-secret"]) >= 32


def test_network_policies_admit_the_ingress_path_to_the_pods_and_only_the_sidecars_to_the_database(
    helm: Helm,
) -> None:
    found = policies(helm.render())
    predictor_policy, database = found["bark-tts-predictor"], found["bark-tts-postgres"]
    assert predictor_policy["podSelector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "bark-tts",
        "component": "predictor",
    }
    (rule,) = predictor_policy["ingress"]
    namespaces = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "knative-eventing" in namespaces and "istio-system" in namespaces
    assert {p["port"] for p in rule["ports"]} == {8080, 9081, 8012, 9091}
    (db_rule,) = database["ingress"]
    assert db_rule["from"] == [{"podSelector": {"matchLabels": predictor_policy["podSelector"]["matchLabels"]}}]
    assert db_rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    extra = "networkPolicy.extraFrom[0].namespaceSelector.matchLabels.team=app"
    with_clients = policies(helm.render("--set", extra))["bark-tts-predictor"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"team": "app"}}} in with_clients
    assert policies(helm.render("--set", "networkPolicy.enabled=false")) == {}


def test_keyless_cloudevents_intake_needs_the_network_policy(helm: Helm) -> None:
    refused = helm.template("--set", "eventing.trigger.enabled=true,networkPolicy.enabled=false")
    assert refused.returncode != 0 and "networkPolicy.enabled=true" in refused.stderr
    allowed = helm.render("--set", "eventing.trigger.enabled=true")
    assert sidecar_env(allowed)["SIDECAR_CLOUDEVENTS_REQUIRE_KEY"] == "false"


def test_sqlite_jobs_replace_pods_with_recreate(helm: Helm) -> None:
    sqlite = "jobs.store=sqlite,autoscaling.maxReplicas=1,deploymentMode=RawDeployment"
    spec = only(helm.render("--set", sqlite), "InferenceService")["spec"]["predictor"]
    assert spec["deploymentStrategy"] == {"type": "Recreate"}
    assert "deploymentStrategy" not in only(helm.render(), "InferenceService")["spec"]["predictor"]


def test_the_sidecar_gets_the_models_limits_its_caps_and_the_optional_admin_keys(helm: Helm) -> None:
    values = (
        "server.maxPromptChars=5000,sidecar.maxQueuedPerKey=7,sidecar.maxResultBytes=1048576,"
        "server.extraEnv[0].name=BARK_MAX_OUTPUT_SECONDS"
    )
    strings = "sidecar.webhookPorts=443,server.extraEnv[0].value=600"
    env = sidecar_env(helm.render("--set", values, "--set-string", strings))
    assert env["BARK_MAX_PROMPT_CHARS"] == "5000", "the same value the model container gets"
    assert env["BARK_MAX_OUTPUT_SECONDS"] == "600"
    assert env["SIDECAR_MAX_QUEUED_PER_KEY"] == "7" and env["SIDECAR_MAX_RESULT_BYTES"] == "1048576"
    assert env["SIDECAR_WEBHOOK_PORTS"] == "443"
    assert env["SIDECAR_ADMIN_API_KEYS"]["secretKeyRef"] == {
        "name": "bark-tts-secrets",
        "key": "admin-api-keys",
        "optional": True,
    }
    defaults = sidecar_env(helm.render())
    assert "BARK_MAX_PROMPT_CHARS" not in defaults and "SIDECAR_MAX_QUEUED_PER_KEY" not in defaults


def test_with_the_keda_job_store_trigger_the_database_also_admits_kedas_operator(helm: Helm) -> None:
    """KEDA's PostgreSQL trigger polls the job table from the keda namespace: the database's policy
    must let it in, or the backlog never scales a pod (and never wakes one from zero)."""
    keda = policies(helm.render(*values_args("keda-values")))["bark-tts-postgres"]
    (rule,) = keda["ingress"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in rule["from"]
    moved = policies(helm.render(*values_args("keda-values"), "--set", "networkPolicy.kedaNamespace=ops"))
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}} in moved["bark-tts-postgres"][
        "ingress"
    ][0]["from"]
    hpa = policies(helm.render(*values_args("raw-deployment-values")))["bark-tts-postgres"]
    assert all("namespaceSelector" not in source for source in hpa["ingress"][0]["from"]), "no KEDA, no opening"
