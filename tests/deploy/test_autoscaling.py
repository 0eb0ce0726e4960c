"""Autoscaling and shutdown as the chart renders them (docs/SCALING.md, docs/DEPLOY.md).

Knative counts job traffic only if the sidecar calls its model through the pod's queue-proxy; KEDA
scales on the server's queue and the shared job store; a pod's grace period outlasts its drains;
voluntary disruptions take one predictor pod at a time. No cluster here: each rule is checked on
every variant's render, and each checker is shown to catch the broken case.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_helpers import REPO, Helm, container, env_of, only, predictor, render_notes, require_executable

from model_server.config import Settings as ServerSettings
from webhook_sidecar.config import Settings as SidecarSettings
from webhook_sidecar.progress import progress_url

Objects = list[dict[str, Any]]
#: Knative's queue-proxy serves HTTP/1 on 8012 in every Serverless pod, in front of the user port
#: (knative.dev/serving pkg/networking: BackendHTTPPort) and counts each request it proxies.
QUEUE_PROXY_PORT = 8012
MODEL_PORT = 8080
#: After SIGTERM queue-proxy waits this long without new requests before it shuts down
#: (pkg/queue/sharedmain: drainSleepDuration); Knative's preStop holds the containers meanwhile.
QUEUE_PROXY_QUIET_S = 30
#: Kubernetes' grace period when a pod spec sets none.
KUBERNETES_DEFAULT_GRACE_S = 30
POD_SELECTOR = {"serving.kserve.io/inferenceservice": "bark-tts", "component": "predictor"}


def serverless(objects: Objects) -> bool:
    return (
        only(objects, "InferenceService")["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    )


def sidecar_or_none(objects: Objects) -> dict[str, Any] | None:
    return next((c for c in predictor(objects)["containers"] if c["name"] == "webhook-sidecar"), None)


# -- job traffic through queue-proxy ------------------------------------------------------------


def model_url_problem(objects: Objects) -> str | None:
    """Why the sidecar's model calls would not be where the autoscaler counts them (None: fine)."""
    sidecar = sidecar_or_none(objects)
    if sidecar is None:
        return None
    url = urlsplit(env_of(sidecar)["SIDECAR_MODEL_URL"])
    port = QUEUE_PROXY_PORT if serverless(objects) else MODEL_PORT
    if (url.hostname, url.port) != ("127.0.0.1", port):
        return f"the sidecar calls {url.hostname}:{url.port}, not the pod's own 127.0.0.1:{port}"
    return None


def test_every_variant_sends_job_calls_where_the_autoscaler_counts_them(renders: dict[str, Objects]) -> None:
    problems = {variant: model_url_problem(objects) for variant, objects in renders.items()}
    assert {variant: problem for variant, problem in problems.items() if problem} == {}


def test_a_serverless_sidecar_calling_port_8080_bypasses_queue_proxy_and_is_caught(
    renders: dict[str, Objects],
) -> None:
    objects = copy.deepcopy(renders["sidecar-values"])
    env = sidecar_or_none(objects)["env"]  # type: ignore[index]
    (model_url,) = [e for e in env if e["name"] == "SIDECAR_MODEL_URL"]
    model_url["value"] = model_url["value"].replace(f":{QUEUE_PROXY_PORT}/", f":{MODEL_PORT}/")
    assert model_url_problem(objects) == "the sidecar calls 127.0.0.1:8080, not the pod's own 127.0.0.1:8012"


def test_progress_polls_follow_the_model_calls_through_queue_proxy(renders: dict[str, Objects]) -> None:
    env = env_of(container(renders["sidecar-values"], "webhook-sidecar"))
    assert env["SIDECAR_MODEL_URL"] == "http://127.0.0.1:8012/v1/models/bark:predict"
    assert progress_url(env["SIDECAR_MODEL_URL"], "j1") == "http://127.0.0.1:8012/v1/requests/j1/progress"


def test_a_job_backlog_fills_a_pod_up_to_the_autoscalers_target(renders: dict[str, Objects], helm: Helm) -> None:
    """Two jobs per pod would never reach Knative's target of 8, so a backlog would never add a pod."""
    default = renders["default"]
    isvc = predictor(default)
    assert (isvc["scaleMetric"], isvc["scaleTarget"]) == ("concurrency", 8)
    assert env_of(container(default, "webhook-sidecar"))["SIDECAR_CONCURRENCY"] == "8"
    keda = renders["keda-values"]
    jobs_trigger = only(keda, "ScaledObject")["spec"]["triggers"][1]
    assert (
        env_of(container(keda, "webhook-sidecar"))["SIDECAR_CONCURRENCY"]
        == jobs_trigger["metadata"]["targetQueryValue"]
    )
    # A value given wins; an HPA on CPU has no per-pod target: the sidecar's own default.
    assert env_of(container(renders["sidecar-values"], "webhook-sidecar"))["SIDECAR_CONCURRENCY"] == "2"
    hpa = helm.render("--set", "deploymentMode=RawDeployment")
    assert "SIDECAR_CONCURRENCY" not in env_of(container(hpa, "webhook-sidecar"))


# -- grace period and drains --------------------------------------------------------------------


def sidecar_http_shutdown_s() -> int:
    """uvicorn's graceful-shutdown timeout that webhook_sidecar/__main__.py passes after the drain."""
    (seconds,) = re.findall(r"timeout_graceful_shutdown=(\d+)", (REPO / "webhook_sidecar" / "__main__.py").read_text())
    return int(seconds)


def drain_seconds(objects: Objects) -> float:
    """What the containers may take after SIGTERM, from the env they get (else their defaults)."""
    server_env = env_of(container(objects, "kserve-container"))
    total = float(server_env.get("BARK_SHUTDOWN_GRACE_S", ServerSettings.model_fields["shutdown_grace_s"].default))
    sidecar = sidecar_or_none(objects)
    if sidecar is not None:
        env = env_of(sidecar)
        fields = SidecarSettings.model_fields
        total += float(env.get("SIDECAR_GRACE_PERIOD_S", fields["grace_period_s"].default))
        total += sidecar_http_shutdown_s()
        # The hand-back waits for a store connection at most this long.
        total += float(env.get("SIDECAR_DB_WAIT_S", fields["db_wait_s"].default))
    return total


def grace_seconds(objects: Objects) -> float:
    """The time the pod's containers get after SIGTERM before the kubelet kills them."""
    pred = predictor(objects)
    if serverless(objects):
        # Knative sets terminationGracePeriodSeconds to the revision timeout; queue-proxy's quiet
        # period comes out of it before the containers get SIGTERM.
        return pred["timeout"] - QUEUE_PROXY_QUIET_S
    return pred.get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE_S)


def test_every_variants_grace_period_outlasts_its_drains(renders: dict[str, Objects]) -> None:
    short = {v: (grace_seconds(o), drain_seconds(o)) for v, o in renders.items() if grace_seconds(o) < drain_seconds(o)}
    assert short == {}


def test_raw_deployment_grace_is_the_sum_of_the_drains_and_serverless_leaves_it_to_knative(
    renders: dict[str, Objects],
) -> None:
    raw = predictor(renders["raw-deployment-values"])
    assert raw["terminationGracePeriodSeconds"] == 30 + 25 + 15 + 5
    assert drain_seconds(renders["raw-deployment-values"]) == 30 + 25 + 5 + 10
    assert "terminationGracePeriodSeconds" not in predictor(renders["default"])  # Knative refuses the field


def test_a_grace_period_shorter_than_the_drains_is_caught(renders: dict[str, Objects], helm: Helm) -> None:
    # Kubernetes' default 30 s, as before this chart set one: the sidecar's drain alone needs 25 + 15.
    objects = copy.deepcopy(renders["raw-deployment-values"])
    del predictor(objects)["terminationGracePeriodSeconds"]
    assert grace_seconds(objects) == 30 < drain_seconds(objects)
    # A longer drain given to the containers but not to the pod.
    objects = copy.deepcopy(renders["raw-deployment-values"])
    for env in container(objects, "webhook-sidecar")["env"]:
        if env["name"] == "SIDECAR_GRACE_PERIOD_S":
            env["value"] = "120"
    assert grace_seconds(objects) < drain_seconds(objects)
    # Given through the chart's values, both move together.
    longer = helm.render("--set", "deploymentMode=RawDeployment,shutdown.sidecarDrainSeconds=120")
    assert grace_seconds(longer) == 30 + 120 + 15 + 5 >= drain_seconds(longer)


def test_server_and_sidecar_drain_what_the_chart_budgets(renders: dict[str, Objects]) -> None:
    objects = renders["raw-deployment-values"]
    assert env_of(container(objects, "kserve-container"))["BARK_SHUTDOWN_GRACE_S"] == "30"
    assert env_of(container(objects, "webhook-sidecar"))["SIDECAR_GRACE_PERIOD_S"] == "25"


# -- KEDA ---------------------------------------------------------------------------------------


def kserve_keda_trigger(metric: dict[str, Any]) -> dict[str, Any]:
    """The trigger KServe's KEDA reconciler builds from one External metric (getKedaMetrics)."""
    external = metric["external"]
    return {
        "type": external["metric"]["backend"],
        "metadata": {
            "serverAddress": external["metric"]["serverAddress"],
            "query": external["metric"]["query"],
            "threshold": str(external["target"]["value"]),
        },
    }


def test_keda_without_a_job_store_is_kserves_own_integration(renders: dict[str, Objects]) -> None:
    objects = renders["keda-queue-only-values"]
    isvc = only(objects, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    pred = isvc["spec"]["predictor"]
    assert "scaleMetric" not in pred and "scaleTarget" not in pred  # KServe's webhook refuses them with keda
    (metric,) = pred["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["target"] == {"type": "Value", "value": 32}
    assert "bark_queue_depth" in metric["external"]["metric"]["query"]
    assert not [o for o in objects if o["kind"] in ("ScaledObject", "TriggerAuthentication")]


def test_keda_with_the_job_store_owns_a_scaled_object_kserve_leaves_alone(renders: dict[str, Objects]) -> None:
    objects = renders["keda-values"]
    isvc = only(objects, "InferenceService")
    # external: KServe makes neither an HPA nor a ScaledObject, and leaves the replicas to KEDA.
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    assert "autoScaling" not in isvc["spec"]["predictor"]
    scaled = only(objects, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {"name": "bark-tts-predictor"}  # KServe's Deployment: <isvc>-predictor
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 4)
    assert [t["type"] for t in scaled["triggers"]] == ["prometheus", "postgresql"]


def test_the_chart_prometheus_trigger_is_the_one_kserve_would_build(renders: dict[str, Objects], helm: Helm) -> None:
    ours = only(renders["keda-values"], "ScaledObject")["spec"]["triggers"][0]
    kserves = helm.render(
        "-f", "charts/bark-tts/ci/keda-values.yaml", "--set", "autoscaling.keda.jobStoreTrigger=false"
    )
    (metric,) = predictor(kserves)["autoScaling"]["metrics"]
    assert {key: ours[key] for key in ("type", "metadata")} == kserve_keda_trigger(metric)


def test_the_queue_query_selects_this_releases_predictor_pods(renders: dict[str, Objects]) -> None:
    query = only(renders["keda-values"], "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    selectors = set(re.findall(r"\{([^}]*)\}", query))
    assert len(selectors) == 1  # both gauges, the same pods
    (selector,) = selectors
    assert 'namespace="default"' in selector
    (pods,) = re.findall(r'pod=~"([^"]+)"', selector)
    # KServe's Deployment bark-tts-predictor names its pods <deployment>-<replicaset hash>-<id>.
    assert re.fullmatch(pods, "bark-tts-predictor-7d9f8c6b5-x2k4q")
    for other in (
        "bark-tts-postgres-0",
        "bark-tts-predictor-00001-deployment-7d9f8c6b5-x2k4q",
        "other-bark-tts-predictor-7d-x",
    ):
        assert not re.fullmatch(pods, other), other


def test_the_job_trigger_reads_the_bundled_store_as_the_sidecars_do(renders: dict[str, Objects]) -> None:
    objects = renders["keda-values"]
    trigger = only(objects, "ScaledObject")["spec"]["triggers"][1]
    env = env_of(container(objects, "webhook-sidecar"))
    dsn = urlsplit(env["SIDECAR_DATABASE_URL"])
    meta = trigger["metadata"]
    assert (meta["host"], meta["port"], meta["userName"], meta["dbName"]) == (
        dsn.hostname, str(dsn.port), dsn.username, dsn.path.lstrip("/")
    )  # fmt: skip
    assert (meta["targetQueryValue"], meta["activationTargetQueryValue"]) == ("8", "0")
    auth = only(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref == {"parameter": "password", **env["PGPASSWORD"]["secretKeyRef"]}


def test_the_job_trigger_reads_an_external_store_from_the_sidecars_dsn_secret(renders: dict[str, Objects]) -> None:
    objects = renders["keda-scale-from-zero-values"]
    meta = only(objects, "ScaledObject")["spec"]["triggers"][1]["metadata"]
    assert "host" not in meta
    (ref,) = only(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    dsn = env_of(container(objects, "webhook-sidecar"))["SIDECAR_DATABASE_URL"]["secretKeyRef"]
    assert ref == {"parameter": "connection", **dsn}


def test_scale_from_zero_lets_keda_take_the_last_pod_and_wake_one_for_a_stored_job(
    renders: dict[str, Objects],
) -> None:
    objects = renders["keda-scale-from-zero-values"]
    assert predictor(objects)["minReplicas"] == 0
    scaled = only(objects, "ScaledObject")["spec"]
    assert (scaled["minReplicaCount"], scaled["cooldownPeriod"]) == (0, 900)
    # One stored job makes the trigger active (above 0): KEDA scales the Deployment from 0 to 1.
    assert scaled["triggers"][1]["metadata"]["activationTargetQueryValue"] == "0"


# -- disruption budget --------------------------------------------------------------------------


def test_a_disruption_budget_covers_the_predictor_pods_when_there_can_be_several(
    renders: dict[str, Objects], helm: Helm
) -> None:
    pdb = only(renders["default"], "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": POD_SELECTOR}
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    single = renders["sqlite-values"]  # maxReplicas 1
    assert not [o for o in single if o["kind"] == "PodDisruptionBudget"]
    forced = helm.render("-f", "charts/bark-tts/ci/sqlite-values.yaml", "--set", "podDisruptionBudget.enabled=true")
    assert only(forced, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    off = helm.render("--set", "podDisruptionBudget.enabled=false")
    assert not [o for o in off if o["kind"] == "PodDisruptionBudget"]


# -- the alert's view of the autoscaler ---------------------------------------------------------


def test_the_autoscaling_settings_are_recorded_for_the_deep_queue_alert(renders: dict[str, Objects]) -> None:
    objects = renders["keda-values"]
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule" and o["metadata"]["name"] == "bark-tts-autoscaling"]
    (group,) = rule["spec"]["groups"]
    recorded = {r["record"]: r for r in group["rules"]}
    labels = {"namespace": "default", "inferenceservice": "bark-tts"}
    assert recorded["namespace:bark_autoscaling_max_replicas:config"] == {
        "record": "namespace:bark_autoscaling_max_replicas:config", "expr": "vector(4)", "labels": labels
    }  # fmt: skip
    assert recorded["namespace:bark_autoscaling_chunks_per_pod:config"]["expr"] == "vector(32)"
    # The alert rule file uses exactly these names.
    alerts = (REPO / "charts" / "bark-tts" / "rules" / "bark-tts.rules.yaml").read_text()
    assert all(name in alerts for name in recorded)


def test_promtool_accepts_the_recorded_settings(renders: dict[str, Objects], tmp_path: Any) -> None:
    (rule,) = [o for o in renders["keda-values"] if o["metadata"]["name"] == "bark-tts-autoscaling"]
    path = tmp_path / "config.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [require_executable("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["default", "raw-deployment-values", "keda-values", "bark-large-values"])
def test_liveness_waits_for_a_startup_budget_that_covers_a_cold_bark_large_load(
    renders: dict[str, Objects], variant: str
) -> None:
    """docs/SCALING.md#startup: suno/bark from a cold volume, worst case about 10 minutes."""
    c = container(renders[variant], "kserve-container")
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3 * 10 * 60
    assert "initialDelaySeconds" not in c["livenessProbe"]  # the startup probe holds it back instead


def test_notes_say_what_keda_reads_and_what_wakes_a_pod_from_zero(helm: Helm, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path, "-f", "charts/bark-tts/ci/keda-scale-from-zero-values.yaml")
    assert "KEDA scales the predictor on its queue, read from Prometheus at http://prometheus-operated" in notes
    assert "monitoring.podMonitor.enabled is off" in notes
    assert "It also counts the jobs in the shared store (ScaledObject bark-tts" in notes
    assert "Scale to zero is ON: with no work stored no pod runs" in notes
    assert "KEDA" not in render_notes(helm, tmp_path / "hpa", "--set", "deploymentMode=RawDeployment")


def scaling_md_targets() -> dict[str, tuple[int, int]]:
    """docs/SCALING.md's table of targets: setting -> (GPU default, CPU value), first number of each cell."""
    text = (REPO / "docs" / "SCALING.md").read_text()
    section = text.split("## How the chart's targets follow", 1)[1]
    (table,) = [block for block in section.split("\n\n") if block.startswith("| setting |")]
    targets = {}
    for line in table.splitlines()[2:]:
        setting, gpu, _why, cpu = (cell.strip() for cell in line.strip("|").split("|"))
        (name,) = re.findall(r"`([a-zA-Z.]+)`", setting)[:1]
        targets[name] = (int(re.findall(r"\d+", gpu)[0]), int(re.findall(r"\d+", cpu)[0]))
    return targets


def test_the_charts_targets_are_the_ones_docs_scaling_derives(renders: dict[str, Objects]) -> None:
    gpu, cpu = renders["default"], renders["cpu-values"]
    values = yaml.safe_load((REPO / "charts" / "bark-tts" / "values.yaml").read_text())["autoscaling"]
    cpu_values = yaml.safe_load((REPO / "charts" / "bark-tts" / "ci" / "cpu-values.yaml").read_text())["autoscaling"]

    def sidecar_concurrency(objects: Objects) -> int:
        return int(env_of(container(objects, "webhook-sidecar"))["SIDECAR_CONCURRENCY"])

    assert scaling_md_targets() == {
        "autoscaling.chunksPerPod": (values["chunksPerPod"], cpu_values["chunksPerPod"]),
        "autoscaling.scaleTarget": (predictor(gpu)["scaleTarget"], predictor(cpu)["scaleTarget"]),
        "autoscaling.keda.jobsPerPod": (values["keda"]["jobsPerPod"], cpu_values["keda"]["jobsPerPod"]),
        "sidecar.concurrency": (sidecar_concurrency(gpu), sidecar_concurrency(cpu)),
    }
