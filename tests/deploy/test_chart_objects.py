"""What the chart renders: the contract with the server, KServe, Knative and the cluster."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    CHART,
    Helm,
    container,
    env_of,
    kinds,
    only,
    predictor,
    require_executable,
)

Objects = list[dict[str, Any]]
# Labels KServe puts on predictor pods, in both deployment modes.
POD_SELECTOR = {"serving.kserve.io/inferenceservice": "bark-tts", "component": "predictor"}


@pytest.fixture(scope="module")
def default(renders: dict[str, Objects]) -> Objects:
    return renders["default"]


def secret_ref(value: Any) -> tuple[str, str]:
    ref = value["secretKeyRef"]
    return ref["name"], ref["key"]


def named(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (match,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return match


def test_defaults_render_the_service_its_secret_the_jobs_service_and_postgres(default: Objects) -> None:
    # The PodDisruptionBudget: the default maxReplicas (2) allows more than one pod.
    assert kinds(default) == [
        "InferenceService",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
        "StatefulSet",
    ]
    isvc = only(default, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == "bark-tts"


def test_the_serving_container_runs_model_server_on_port_8080(default: Objects) -> None:
    c = predictor(default)["containers"][0]
    assert c["name"] == "kserve-container"
    assert c["image"] == "ghcr.io/bark-kserve/bark-kserve:0.1.0"
    assert c["command"] == ["python", "-m", "model_server"]
    assert {"--model_name=bark", "--http_port=8080", "--enable_grpc=false", "--model_dir=/mnt/models"} <= set(c["args"])
    assert c["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]


def test_default_weights_come_from_hf_storage_uri(default: Objects) -> None:
    assert env_of(container(default, "kserve-container"))["STORAGE_URI"] == "hf://suno/bark-small"


def test_gpu_node_selector_tolerations_and_fp16(default: Objects) -> None:
    p = predictor(default)
    c = container(default, "kserve-container")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert p["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p["tolerations"]
    env = env_of(c)
    assert (env["BARK_DEVICE"], env["BARK_DTYPE"]) == ("cuda", "float16")


def test_unset_server_settings_are_not_rendered(default: Objects) -> None:
    env = env_of(container(default, "kserve-container"))
    assert not {"BARK_MAX_BATCH_SIZE", "BARK_MAX_WAIT_MS", "BARK_ATTENTION", "BARK_DECODER"} & env.keys()
    assert env["BARK_LOG_FORMAT"] == "json"


def test_server_times_out_just_before_knative_cuts_the_request(default: Objects, helm: Helm) -> None:
    """A clean 504 from the server beats a connection reset from the platform's timeout."""
    assert env_of(container(default, "kserve-container"))["BARK_REQUEST_TIMEOUT_S"] == "590"
    shorter = helm.render("--set", "requestTimeoutSeconds=120")
    assert env_of(container(shorter, "kserve-container"))["BARK_REQUEST_TIMEOUT_S"] == "110"
    explicit = helm.render("--set", "server.requestTimeoutS=45")
    assert env_of(container(explicit, "kserve-container"))["BARK_REQUEST_TIMEOUT_S"] == "45"


def test_set_server_settings_become_bark_env_vars(helm: Helm) -> None:
    objects = helm.render(
        "--set", "server.maxBatchSize=8", "--set", "server.maxWaitMs=0", "--set", "server.attention=sdpa",
        "--set", "server.extraEnv[0].name=BARK_PAUSE_MS", "--set-string", "server.extraEnv[0].value=200",
    )  # fmt: skip
    env = env_of(container(objects, "kserve-container"))
    assert env["BARK_MAX_BATCH_SIZE"] == "8"
    assert env["BARK_MAX_WAIT_MS"] == "0"
    assert env["BARK_ATTENTION"] == "sdpa"
    assert env["BARK_PAUSE_MS"] == "200"


def test_probes_give_the_model_load_at_least_20_minutes(default: Objects) -> None:
    c = container(default, "kserve-container")
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/v1/models/bark", "port": 8080}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/models/bark"
    assert c["livenessProbe"]["httpGet"]["path"] == "/"
    # Knative would fail the revision before the startup budget ran out without a longer deadline.
    annotations = only(default, "InferenceService")["metadata"]["annotations"]
    deadline = annotations["serving.knative.dev/progress-deadline"]
    assert int(deadline.rstrip("s")) > startup["periodSeconds"] * startup["failureThreshold"]


def test_without_a_startup_probe_liveness_waits_out_the_load(helm: Helm) -> None:
    c = container(helm.render("--set", "probes.startup.enabled=false"), "kserve-container")
    assert "startupProbe" not in c
    assert c["livenessProbe"]["initialDelaySeconds"] >= 20 * 60


def test_serverless_autoscaling_fields_and_annotations(default: Objects) -> None:
    isvc = only(default, "InferenceService")
    p = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert (p["minReplicas"], p["maxReplicas"]) == (1, 2)
    assert (p["scaleMetric"], p["scaleTarget"], p["containerConcurrency"]) == ("concurrency", 8, 0)


def test_scale_to_zero_variant_sets_knative_annotations(renders: dict[str, Objects]) -> None:
    isvc = only(renders["scale-to-zero-values"], "InferenceService")
    annotations = isvc["metadata"]["annotations"]
    assert isvc["spec"]["predictor"]["minReplicas"] == 0
    assert annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "15m"
    assert annotations["autoscaling.knative.dev/initial-scale"] == "1"


def test_raw_deployment_uses_hpa_on_cpu(renders: dict[str, Objects]) -> None:
    isvc = only(renders["raw-deployment-values"], "InferenceService")
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert not any(k.startswith(("autoscaling.knative.dev", "serving.knative.dev")) for k in annotations)
    p = isvc["spec"]["predictor"]
    assert (p["scaleMetric"], p["scaleTarget"], p["maxReplicas"]) == ("cpu", 75, 3)
    assert "containerConcurrency" not in p


def test_raw_deployment_defaults_to_cpu_utilisation(helm: Helm) -> None:
    p = predictor(helm.render("--set", "deploymentMode=RawDeployment"))
    assert (p["scaleMetric"], p["scaleTarget"]) == ("cpu", 80)


def test_prometheus_scrape_annotations_on_the_pods(default: Objects) -> None:
    annotations = predictor(default)["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_api_keys_file_is_mounted_from_the_chart_secret(default: Objects) -> None:
    c = container(default, "kserve-container")
    secret = only(default, "Secret")
    assert secret["metadata"]["name"] == "bark-tts-secrets"
    assert env_of(c)["BARK_API_KEYS_FILE"] == "/etc/bark/secrets/api-keys"
    assert {"name": "secrets", "mountPath": "/etc/bark/secrets", "readOnly": True} in c["volumeMounts"]
    (volume,) = [v for v in predictor(default)["volumes"] if v["name"] == "secrets"]
    assert volume["secret"]["secretName"] == "bark-tts-secrets"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": "api-keys"}]
    assert "optional" not in volume["secret"]  # a Secret without the key stops the pod: auth fails closed
    assert secret_ref(env_of(c)["HF_TOKEN"]) == ("bark-tts-secrets", "hf-token")


def test_auth_disabled_mounts_no_key_file(helm: Helm) -> None:
    objects = helm.render("--set", "auth.enabled=false")
    c = container(objects, "kserve-container")
    assert "BARK_API_KEYS_FILE" not in env_of(c)
    assert "volumeMounts" not in c
    assert "api-keys" not in only(objects, "Secret").get("data", {})


def test_existing_secret_is_referenced_and_none_created(renders: dict[str, Objects]) -> None:
    objects = renders["existing-secret-values"]
    assert "Secret" not in kinds(objects)
    env = env_of(container(objects, "kserve-container"))
    assert secret_ref(env["HF_TOKEN"]) == ("bark-tts-credentials", "hf-token")
    sidecar_env = env_of(container(objects, "webhook-sidecar"))
    assert secret_ref(sidecar_env["SIDECAR_WEBHOOK_SECRET"]) == ("bark-tts-credentials", "webhook-secret")
    (volume,) = [v for v in predictor(objects)["volumes"] if v["name"] == "secrets"]
    assert volume["secret"]["secretName"] == "bark-tts-credentials"


def test_auth_existing_secret_is_an_alias(helm: Helm) -> None:
    objects = helm.render("--set", "auth.existingSecret=mine")
    assert "Secret" not in kinds(objects)
    assert secret_ref(env_of(container(objects, "kserve-container"))["HF_TOKEN"]) == ("mine", "hf-token")


def test_the_sidecar_is_on_by_default_with_the_bundled_postgres_job_store(default: Objects) -> None:
    assert [c["name"] for c in predictor(default)["containers"]] == ["kserve-container", "webhook-sidecar"]
    env = env_of(container(default, "webhook-sidecar"))
    assert env["SIDECAR_DATABASE_URL"] == "postgresql://bark@bark-tts-postgres:5432/bark_jobs"
    assert secret_ref(env["PGPASSWORD"]) == ("bark-tts-secrets", "postgres-password")
    assert "SIDECAR_DB_PATH" not in env
    assert "jobs" not in [v["name"] for v in predictor(default)["volumes"]]
    assert "PersistentVolumeClaim" not in kinds(default)
    password = only(default, "Secret")["data"]["postgres-password"]
    assert len(base64.b64decode(password)) >= 32


def test_bundled_postgres_is_one_pod_with_a_claim_probes_resources_and_the_secret_password(default: Objects) -> None:
    statefulset = named(default, "StatefulSet", "bark-tts-postgres")
    spec = statefulset["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == "bark-tts-postgres"
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == 70
    assert "nodeSelector" not in pod and "tolerations" not in pod, "no GPU node for the database"
    (db,) = pod["containers"]
    env = env_of(db)
    assert secret_ref(env["POSTGRES_PASSWORD"]) == ("bark-tts-secrets", "postgres-password")
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("bark", "bark_jobs")
    assert env["PGDATA"].startswith("/var/lib/postgresql/data/")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert db[probe]["exec"]["command"][0] == "pg_isready", probe
    assert db["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert db["resources"]["limits"] == {"memory": "1Gi"}
    assert {"name": "data", "mountPath": "/var/lib/postgresql/data"} in db["volumeMounts"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    service = named(default, "Service", "bark-tts-postgres")
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert service["spec"]["selector"] != POD_SELECTOR
    assert service["spec"]["ports"][0]["port"] == 5432


def test_raw_deployment_variant_tunes_the_bundled_postgres(renders: dict[str, Objects]) -> None:
    objects = renders["raw-deployment-values"]
    spec = named(objects, "StatefulSet", "bark-tts-postgres")["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "standard"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert spec["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}


@pytest.mark.parametrize("variant", ["jobs-external-values", "jobs-external-serverless-values"])
def test_an_external_postgres_is_read_from_the_users_secret_and_none_is_installed(
    renders: dict[str, Objects], variant: str
) -> None:
    objects = renders[variant]
    assert "StatefulSet" not in kinds(objects)
    env = env_of(container(objects, "webhook-sidecar"))
    key = "dsn" if variant == "jobs-external-values" else "database-url"
    assert secret_ref(env["SIDECAR_DATABASE_URL"]) == ("bark-jobs-database", key)
    assert "PGPASSWORD" not in env
    assert "postgres-password" not in only(objects, "Secret")["data"]


def test_sqlite_variants_keep_the_file_per_pod_on_one_replica(renders: dict[str, Objects]) -> None:
    raw = renders["sqlite-values"]
    env = env_of(container(raw, "webhook-sidecar"))
    assert env["SIDECAR_DB_PATH"] == "/var/lib/bark-jobs/jobs.sqlite3"
    assert "SIDECAR_DATABASE_URL" not in env
    assert "StatefulSet" not in kinds(raw)
    pvc = only(raw, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "bark-tts-jobs"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    (jobs,) = [v for v in predictor(raw)["volumes"] if v["name"] == "jobs"]
    assert jobs["persistentVolumeClaim"] == {"claimName": "bark-tts-jobs"}
    assert predictor(raw)["maxReplicas"] == 1
    serverless = renders["sqlite-serverless-values"]
    (jobs,) = [v for v in predictor(serverless)["volumes"] if v["name"] == "jobs"]
    assert jobs == {"name": "jobs", "emptyDir": {}}


def test_serverless_sidecar_declares_no_port_and_is_reached_by_its_own_service(
    renders: dict[str, Objects],
) -> None:
    objects = renders["sidecar-values"]
    sidecar = container(objects, "webhook-sidecar")
    assert sidecar["command"] == ["python", "-m", "webhook_sidecar"]
    assert "ports" not in sidecar  # Knative rejects a second container with ports
    assert "readinessProbe" not in sidecar  # needs Knative's multi-container-probing
    env = env_of(sidecar)
    # Through Knative's queue-proxy (test_autoscaling.py says why).
    assert env["SIDECAR_MODEL_URL"] == "http://127.0.0.1:8012/v1/models/bark:predict"
    assert env["SIDECAR_DATABASE_URL"] == "postgresql://bark@bark-tts-postgres:5432/bark_jobs"
    assert env["SIDECAR_LEASE_S"] == "30"
    assert env["SIDECAR_API_KEYS_FILE"] == "/etc/bark/secrets/api-keys"
    assert env["SIDECAR_CONCURRENCY"] == "2"
    assert env["SIDECAR_JOB_TIMEOUT_S"] == "900"
    assert env["SIDECAR_MAX_ATTEMPTS"] == "6"
    assert secret_ref(env["SIDECAR_WEBHOOK_SECRET"]) == ("bark-tts-secrets", "webhook-secret")
    assert "jobs" not in [v["name"] for v in predictor(objects)["volumes"]]
    service = named(objects, "Service", "bark-tts-jobs")
    assert service["metadata"]["name"] == "bark-tts-jobs"
    assert service["spec"]["selector"] == POD_SELECTOR
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 9081, "protocol": "TCP"}]
    assert "webhook-secret" in only(objects, "Secret")["data"]


def test_trigger_sends_job_requests_to_the_sidecar_service(renders: dict[str, Objects]) -> None:
    # Triggers send no API key: the sidecar must accept keyless CloudEvents then, and only then.
    sidecar_env = env_of(container(renders["sidecar-values"], "webhook-sidecar"))
    assert sidecar_env["SIDECAR_CLOUDEVENTS_REQUIRE_KEY"] == "false"
    assert "SIDECAR_CLOUDEVENTS_REQUIRE_KEY" not in env_of(
        container(renders["raw-deployment-values"], "webhook-sidecar")
    )
    trigger = only(renders["sidecar-values"], "Trigger")
    assert trigger["apiVersion"] == "eventing.knative.dev/v1"
    assert trigger["spec"]["broker"] == "default"
    assert trigger["spec"]["filter"] == {"attributes": {"type": "com.barkkserve.tts.requested"}}
    assert trigger["spec"]["subscriber"] == {
        "ref": {"apiVersion": "v1", "kind": "Service", "name": "bark-tts-jobs"},
        "uri": "/",
    }


def test_raw_deployment_sidecar_declares_its_port_and_probes(renders: dict[str, Objects]) -> None:
    objects = renders["raw-deployment-values"]
    sidecar = container(objects, "webhook-sidecar")
    assert sidecar["ports"] == [{"name": "http-jobs", "containerPort": 9081, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9081}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9081}
    assert "PersistentVolumeClaim" not in kinds(objects), "the shared store needs no claim per pod"
    env = env_of(sidecar)
    assert env["SIDECAR_WEBHOOK_ALLOWLIST"] == "hooks.example.com,*.internal.example.com"
    assert env["SIDECAR_PUBLIC_URL"] == "https://tts-jobs.example.com"


def test_pvc_variant_mounts_the_claim_through_kserve(renders: dict[str, Objects]) -> None:
    c = container(renders["pvc-values"], "kserve-container")
    assert env_of(c)["STORAGE_URI"] == "pvc://bark-models/suno/bark-small"
    assert "--model_dir=/mnt/models" in c["args"]


def test_download_variant_passes_the_model_id_and_a_writable_hf_home(renders: dict[str, Objects]) -> None:
    objects = renders["download-values"]
    c = container(objects, "kserve-container")
    env = env_of(c)
    assert "STORAGE_URI" not in env
    assert "--model_id=suno/bark-small" in c["args"]
    assert not any(a.startswith("--model_dir") for a in c["args"])
    assert env["HF_HOME"] == "/home/bark/.cache/huggingface"
    assert {"name": "hf-cache", "mountPath": "/home/bark/.cache/huggingface"} in c["volumeMounts"]
    (cache,) = [v for v in predictor(objects)["volumes"] if v["name"] == "hf-cache"]
    assert cache["persistentVolumeClaim"] == {"claimName": "hf-cache"}


def test_download_without_a_claim_uses_a_bounded_empty_dir(helm: Helm) -> None:
    objects = helm.render("--set", "model.source=download")
    (cache,) = [v for v in predictor(objects)["volumes"] if v["name"] == "hf-cache"]
    assert cache["emptyDir"] == {"sizeLimit": "20Gi"}


def test_bark_large_variant(renders: dict[str, Objects]) -> None:
    objects = renders["bark-large-values"]
    c = container(objects, "kserve-container")
    assert env_of(c)["STORAGE_URI"] == "hf://suno/bark"
    assert predictor(objects)["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.2xlarge"}
    assert c["resources"]["limits"] == {"memory": "28Gi", "nvidia.com/gpu": 1}


def test_cpu_variant_requests_no_gpu(renders: dict[str, Objects]) -> None:
    objects = renders["cpu-values"]
    c = container(objects, "kserve-container")
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "nodeSelector" not in predictor(objects)
    assert (env_of(c)["BARK_DEVICE"], env_of(c)["BARK_DTYPE"]) == ("cpu", "float32")


def test_containers_run_as_non_root(renders: dict[str, Objects]) -> None:
    for c in predictor(renders["raw-deployment-values"])["containers"]:
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["runAsUser"] == 1000
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_fs_group_only_when_a_writable_claim_is_mounted(renders: dict[str, Objects]) -> None:
    assert "fsGroup" not in predictor(renders["default"])["securityContext"]
    assert "fsGroup" not in predictor(renders["raw-deployment-values"])["securityContext"]
    assert predictor(renders["sqlite-values"])["securityContext"]["fsGroup"] == 1000
    assert predictor(renders["download-values"])["securityContext"]["fsGroup"] == 1000


def test_monitoring_variant_renders_monitors_on_the_metrics_port(renders: dict[str, Objects]) -> None:
    objects = renders["monitoring-values"]
    service = named(objects, "Service", "bark-tts-metrics")
    assert service["metadata"]["name"] == "bark-tts-metrics"
    assert service["spec"]["clusterIP"] == "None"
    port, jobs_port = service["spec"]["ports"]  # the sidecar (on by default) serves its own /metrics
    assert port == {"name": "metrics", "port": 8080, "targetPort": 8080, "protocol": "TCP"}
    assert jobs_port == {"name": "jobs-metrics", "port": 9081, "targetPort": 9081, "protocol": "TCP"}
    monitor = only(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0] == {"port": "metrics", "path": "/metrics", "interval": "30s"}
    pod_monitor = only(objects, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"] == POD_SELECTOR
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http1"


def test_grafana_dashboard_configmap_holds_every_dashboard_file(renders: dict[str, Objects]) -> None:
    files = {p.name: p for p in (CHART / "dashboards").glob("*.json")}
    configmaps = [o for o in renders["monitoring-values"] if o["kind"] == "ConfigMap"]
    if not files:
        assert configmaps == []
        return
    (cm,) = configmaps
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "TTS"}
    assert set(cm["data"]) == set(files)
    for name, path in files.items():
        assert json.loads(cm["data"][name]) == json.loads(path.read_text())


def test_prometheus_rule_holds_every_rule_group_and_promtool_accepts_it(
    renders: dict[str, Objects], tmp_path: Any
) -> None:
    files = sorted((CHART / "rules").glob("*.yaml"))
    groups = [g for p in files for g in yaml.safe_load(p.read_text())["groups"]]
    # bark-tts-autoscaling (the autoscaling settings as series) is tested in test_autoscaling.py.
    rules = [
        o for o in renders["monitoring-values"] if o["kind"] == "PrometheusRule" and o["metadata"]["name"] == "bark-tts"
    ]
    if not groups:
        assert rules == []
        return
    (rule,) = rules
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == groups
    rendered = tmp_path / "rules.yaml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [require_executable("promtool"), "check", "rules", str(rendered)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_monitoring_objects_are_off_by_default(default: Objects) -> None:
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} & set(kinds(default))


def test_dashboards_and_rule_files_are_all_loaded(helm: Helm, tmp_path: Any) -> None:
    """The glob/merge logic, on sample files (the real ones are checked above when present)."""
    chart = tmp_path / "bark-tts"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("dashboards", "rules"))
    (chart / "dashboards").mkdir()
    (chart / "rules").mkdir()
    (chart / "dashboards" / "a.json").write_text('{"title": "a {{ not helm }}", "panels": []}')
    (chart / "dashboards" / "b.json").write_text('{"title": "b", "panels": []}')
    (chart / "rules" / "a.yaml").write_text(
        "groups:\n  - name: a\n    rules:\n      - alert: A\n        expr: up == 0\n"
        "        annotations: {summary: '{{ $labels.pod }} down'}\n"
    )
    (chart / "rules" / "b.yaml").write_text("groups:\n  - {name: b, rules: [{record: r, expr: up}]}\n")
    (chart / "rules" / "empty.yaml").write_text("groups: []\n")
    objects = helm.render("-f", str(chart / "ci" / "monitoring-values.yaml"), chart=chart)
    cm = only(objects, "ConfigMap")
    assert json.loads(cm["data"]["a.json"])["title"] == "a {{ not helm }}"
    assert set(cm["data"]) == {"a.json", "b.json"}
    groups = named(objects, "PrometheusRule", "bark-tts")["spec"]["groups"]
    assert [g["name"] for g in groups] == ["a", "b"]
    assert groups[0]["rules"][0]["annotations"]["summary"] == "{{ $labels.pod }} down"


def test_no_dashboard_or_rule_files_render_no_empty_objects(helm: Helm, tmp_path: Any) -> None:
    chart = tmp_path / "bark-tts"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("dashboards", "rules"))
    objects = helm.render("-f", str(chart / "ci" / "monitoring-values.yaml"), chart=chart)
    assert "ConfigMap" not in kinds(objects)
    # Only the chart's own autoscaling series remain, no PrometheusRule made of rule files.
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "PrometheusRule"] == ["bark-tts-autoscaling"]
    assert {"ServiceMonitor", "PodMonitor"} <= set(kinds(objects))
