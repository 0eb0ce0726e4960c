"""Where the chart keeps custom voices (BARK_VOICE_STORE): the jobs' PostgreSQL when they use one, so
every replica shares them; a directory the image makes otherwise; or what `voices.store` says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_helpers import REPO, Helm, container, env_of


def envs(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model server env, sidecar env)."""
    return env_of(container(objects, "kserve-container")), env_of(container(objects, "webhook-sidecar"))


def test_the_voices_share_the_bundled_job_database_and_its_password(renders: dict[str, Any]) -> None:
    model, sidecar = envs(renders["default"])
    assert (
        model["BARK_VOICE_STORE"]
        == sidecar["SIDECAR_DATABASE_URL"]
        == "postgresql://bark@bark-tts-postgres:5432/bark_jobs"
    )
    assert model["PGPASSWORD"] == sidecar["PGPASSWORD"]


def test_an_external_job_database_holds_the_voices_too(renders: dict[str, Any]) -> None:
    model, sidecar = envs(renders["jobs-external-values"])
    assert model["BARK_VOICE_STORE"] == sidecar["SIDECAR_DATABASE_URL"]
    assert "secretKeyRef" in model["BARK_VOICE_STORE"] and "PGPASSWORD" not in model


def test_without_a_job_database_voices_live_in_the_directory_the_image_makes(renders: dict[str, Any]) -> None:
    model = env_of(container(renders["sqlite-values"], "kserve-container"))
    assert model["BARK_VOICE_STORE"] == "/var/lib/bark-voices"
    dockerfile = (Path(REPO) / "Dockerfile").read_text()
    assert "BARK_VOICE_STORE=/var/lib/bark-voices" in dockerfile
    assert 'chown -R 1000:1000 /home/bark /var/lib/bark-jobs "$BARK_VOICE_STORE"' in dockerfile


def test_voices_store_and_bounds_are_passed_on(helm: Helm) -> None:
    objects = helm.render(
        "--set",
        "voices.store=postgresql://voices@db.example:5432/voices",
        "--set",
        "voices.maxBytes=100000",
        "--set",
        "voices.maxPerKey=5",
    )
    model = env_of(container(objects, "kserve-container"))
    assert model["BARK_VOICE_STORE"] == "postgresql://voices@db.example:5432/voices"
    assert (model["BARK_VOICE_MAX_BYTES"], model["BARK_MAX_VOICES_PER_KEY"]) == ("100000", "5")


def test_admin_keys_come_from_the_secret_when_it_has_them(renders: dict[str, Any]) -> None:
    model = env_of(container(renders["default"], "kserve-container"))
    ref = model["BARK_ADMIN_API_KEYS"]["secretKeyRef"]
    assert (ref["key"], ref["optional"]) == ("admin-api-keys", True)


def test_a_store_that_is_neither_a_url_nor_an_absolute_path_is_refused(helm: Helm) -> None:
    result = helm.template("--set", "voices.store=relative/voices")
    assert result.returncode != 0 and "voices.store" in result.stderr
