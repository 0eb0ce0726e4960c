"""Wrong values fail at `helm template`/`install` time with a message that names the problem."""

from __future__ import annotations

import pytest
from deploy_helpers import Helm

REJECTED = {
    "a string for maxReplicas": (["--set", "autoscaling.maxReplicas=abc"], "autoscaling.maxReplicas"),
    "an unknown dtype": (["--set", "server.dtype=float8"], "server.dtype"),
    "an unknown attention": (["--set", "server.attention=flash3"], "server.attention"),
    "an unknown deployment mode": (["--set", "deploymentMode=Knative"], "deploymentMode"),
    "an unknown weights source": (["--set", "model.source=s3"], "model.source"),
    "a typo in a key": (["--set", "autoscaling.maxReplica=3"], "maxReplica"),
    "a model id that is no repo": (["--set", "model.id=bark small"], "model.id"),
    "a zero batch size": (["--set", "server.maxBatchSize=0"], "server.maxBatchSize"),
    "a short API key": (["--set", "secrets.apiKeys={abc}"], "secrets.apiKeys"),
    "an unknown scale metric": (["--set", "autoscaling.scaleMetric=gpu"], "autoscaling.scaleMetric"),
    "a negative GPU count": (["--set", "gpu.count=-1"], "gpu.count"),
    # Cross-field rules (template `fail`):
    "zero replicas without scale to zero": (["--set", "autoscaling.minReplicas=0"], "scaleToZero"),
    "min above max": (["--set", "autoscaling.minReplicas=3"], "must not exceed"),
    "scale to zero in RawDeployment on the HPA": (
        ["--set", "deploymentMode=RawDeployment", "--set", "autoscaling.scaleToZero=true"],
        "autoscaling.scaleToZero in RawDeployment needs rawAutoscalerClass keda with the job-store trigger",
    ),
    "scale to zero with KEDA but no job store to wake it": (
        [
            "--set",
            "deploymentMode=RawDeployment,autoscaling.rawAutoscalerClass=keda",
            "--set",
            "autoscaling.scaleToZero=true,autoscaling.minReplicas=0,sidecar.enabled=false",
        ],
        "only queued jobs can wake a pod there",
    ),
    "an HPA metric with KEDA": (
        ["--set", "deploymentMode=RawDeployment,autoscaling.rawAutoscalerClass=keda,autoscaling.scaleMetric=cpu"],
        "keda scales on autoscaling.chunksPerPod",
    ),
    "an unknown raw autoscaler": (
        ["--set", "deploymentMode=RawDeployment,autoscaling.rawAutoscalerClass=kpa"],
        "autoscaling.rawAutoscalerClass",
    ),
    "a request timeout shorter than a Serverless pod's shutdown": (
        ["--set", "requestTimeoutSeconds=90"],
        "requestTimeoutSeconds 90 is shorter than a Serverless pod's shutdown (105 s",
    ),
    "the sidecar's drain set behind the chart's back": (
        ["--set", "sidecar.extraEnv[0].name=SIDECAR_GRACE_PERIOD_S,sidecar.extraEnv[0].value=120"],
        "SIDECAR_GRACE_PERIOD_S in extraEnv would outlast the pod's grace period: set shutdown.* instead",
    ),
    "the server's drain set behind the chart's back": (
        ["--set", "server.extraEnv[0].name=BARK_SHUTDOWN_GRACE_S,server.extraEnv[0].value=120"],
        "BARK_SHUTDOWN_GRACE_S in extraEnv",
    ),
    "a concurrency metric in RawDeployment": (
        ["--set", "deploymentMode=RawDeployment", "--set", "autoscaling.scaleMetric=concurrency"],
        "not for RawDeployment",
    ),
    "a cpu metric in Serverless": (["--set", "autoscaling.scaleMetric=cpu"], "not for Serverless"),
    "the sidecar with scale to zero in Serverless": (
        ["--set", "autoscaling.scaleToZero=true,autoscaling.minReplicas=0"],
        "queued jobs need a running pod",
    ),
    "a pvc source without a claim": (["--set", "model.source=pvc"], "model.pvc.claimName"),
    "a trigger without the sidecar": (
        ["--set", "eventing.trigger.enabled=true", "--set", "sidecar.enabled=false"],
        "set sidecar.enabled",
    ),
    "the sqlite job store with more than one replica": (
        ["--set", "jobs.store=sqlite"],
        "jobs.store sqlite keeps each pod's jobs in its own file, so with autoscaling.maxReplicas 2",
    ),
    "the sqlite job store scaled out in RawDeployment": (
        ["-f", "charts/bark-tts/ci/sqlite-values.yaml", "--set", "autoscaling.maxReplicas=3"],
        "use jobs.store postgres, or maxReplicas 1",
    ),
    "an external job database without its Secret": (
        ["--set", "jobs.postgres.mode=external"],
        "set jobs.postgres.external.existingSecret",
    ),
    "an unknown job store": (["--set", "jobs.store=redis"], "jobs.store"),
    "a short postgres password": (["--set", "jobs.postgres.bundled.password=short"], "password"),
    "two different existing secrets": (
        ["--set", "secrets.existingSecret=a", "--set", "auth.existingSecret=b"],
        "name different Secrets",
    ),
}


@pytest.mark.parametrize("case", REJECTED, ids=list(REJECTED))
def test_helm_template_rejects(helm: Helm, case: str) -> None:
    args, message = REJECTED[case]
    result = helm.template(*args)
    assert result.returncode != 0, f"accepted {case}"
    assert message in result.stderr, result.stderr


def test_sqlite_on_one_replica_and_an_external_database_with_its_secret_are_accepted(helm: Helm) -> None:
    assert helm.template("--set", "jobs.store=sqlite,autoscaling.maxReplicas=1").returncode == 0
    assert helm.template("--set", "jobs.store=sqlite,sidecar.enabled=false").returncode == 0
    external = "jobs.postgres.mode=external,jobs.postgres.external.existingSecret=db"
    assert helm.template("--set", external).returncode == 0


def test_the_same_keys_with_good_values_are_accepted(helm: Helm) -> None:
    result = helm.template(
        "--set", "autoscaling.maxReplicas=3,server.dtype=bfloat16,server.attention=sdpa,model.id=suno/bark",
        "--set", "server.maxBatchSize=1,gpu.count=0,secrets.apiKeys={0123456789abcdef0123}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
