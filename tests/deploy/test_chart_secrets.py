"""API-key auth is on by default: a generated key, kept on upgrade, and NOTES that say how to use it."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import yaml
from deploy_helpers import Helm, only, predictor, render_notes
from fake_apiserver import fake_apiserver


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def test_first_install_generates_a_random_api_key(helm: Helm) -> None:
    first = decoded(only(helm.render(), "Secret"))
    second = decoded(only(helm.render(), "Secret"))
    assert len(first["api-keys"]) >= 32
    assert first["api-keys"].isalnum()
    assert first["api-keys"] != second["api-keys"]
    assert len(first["webhook-secret"]) >= 32  # the sidecar is on by default
    assert len(first["postgres-password"]) >= 32 and first["postgres-password"].isalnum()
    no_sidecar = decoded(only(helm.render("--set", "sidecar.enabled=false"), "Secret"))
    assert "webhook-secret" not in no_sidecar and "postgres-password" not in no_sidecar
    external = "jobs.postgres.mode=external,jobs.postgres.external.existingSecret=db"
    assert "postgres-password" not in decoded(only(helm.render("--set", external), "Secret"))


def test_upgrades_keep_the_keys_already_in_the_cluster(helm: Helm, tmp_path: Path) -> None:
    existing = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bark-tts-secrets", "namespace": "default"},
        "data": {
            "api-keys": base64.b64encode(b"kept-key-0123456789").decode(),
            "postgres-password": base64.b64encode(b"kept-database-password-0123").decode(),
        },
    }
    with fake_apiserver([existing], tmp_path) as kubeconfig:
        result = helm.template("--dry-run=server", "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stderr
    secret = only([d for d in yaml.safe_load_all(result.stdout) if d], "Secret")
    data = decoded(secret)
    assert data["api-keys"] == "kept-key-0123456789"
    # PostgreSQL keeps the password its data folder was created with: a new one would lock the sidecars out.
    assert data["postgres-password"] == "kept-database-password-0123"
    assert len(data["webhook-secret"]) >= 32  # missing keys are still generated


def test_given_keys_are_used_verbatim(helm: Helm) -> None:
    objects = helm.render(
        "--set", "secrets.apiKeys={key-one-0123456789,key-two-0123456789}",
        "--set", "secrets.webhookSecret=whsec-0123456789abcdef", "--set", "secrets.hfToken=hf_abc",
        "--set", "jobs.postgres.bundled.password=given-password-0123456789",
    )  # fmt: skip
    assert decoded(only(objects, "Secret")) == {
        "api-keys": "key-one-0123456789\nkey-two-0123456789",
        "webhook-secret": "whsec-0123456789abcdef",
        "postgres-password": "given-password-0123456789",
        "hf-token": "hf_abc",
    }


def test_pods_roll_when_the_secret_changes(helm: Helm) -> None:
    """The pod checksum is computed from the very Secret rendered, random keys included."""

    def checksum_and_secret(*args: str) -> tuple[str, dict[str, Any]]:
        objects = helm.render(*args)
        return predictor(objects)["annotations"]["checksum/secrets"], only(objects, "Secret")

    checksum, secret = checksum_and_secret()
    data_yaml = "\n".join(f"{k}: {v}" for k, v in sorted(secret["data"].items()))
    assert checksum == hashlib.sha256(data_yaml.encode()).hexdigest()
    fixed = "secrets.webhookSecret=whsec-0123456789abcdef,jobs.postgres.bundled.password=pg-password-0123456789"
    a, _ = checksum_and_secret("--set", "secrets.apiKeys={aaaaaaaaaaaaaaaaaaaa}", "--set", fixed)
    b, _ = checksum_and_secret("--set", "secrets.apiKeys={bbbbbbbbbbbbbbbbbbbb}", "--set", fixed)
    assert a != b
    assert a == checksum_and_secret("--set", "secrets.apiKeys={aaaaaaaaaaaaaaaaaaaa}", "--set", fixed)[0]


def test_notes_show_how_to_read_the_key_and_call_the_route(helm: Helm, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path)
    assert "kubectl -n default get secret bark-tts-secrets -o jsonpath='{.data.api-keys}' | base64 -d" in notes
    assert 'curl -sS "$URL/v1/models/bark:predict" -H "Host: $HOST"' in notes
    assert '-H "Authorization: Bearer $API_KEY"' in notes
    assert "get inferenceservice bark-tts -o jsonpath='{.status.url}'" in notes


def test_notes_warn_when_auth_is_off_and_jobs_are_ephemeral(helm: Helm, tmp_path: Path) -> None:
    sqlite = "jobs.store=sqlite,autoscaling.maxReplicas=1"
    notes = render_notes(helm, tmp_path, "--set", "auth.enabled=false", "--set", sqlite)
    assert "API-key auth is OFF" in notes
    assert "Authorization" not in notes
    assert "emptyDir: queued and finished jobs are lost" in notes


def test_notes_say_where_jobs_are_kept(helm: Helm, tmp_path: Path) -> None:
    assert "Jobs are kept in PostgreSQL (bark-tts-postgres" in render_notes(helm, tmp_path)
    external = "jobs.postgres.mode=external,jobs.postgres.external.existingSecret=jobs-db"
    assert "DSN from Secret jobs-db" in render_notes(helm, tmp_path / "external", "--set", external)
