"""`playground.enabled` turns the browser playground on in the predictor (BARK_PLAYGROUND), off by default."""

from __future__ import annotations

from deploy_helpers import Helm, container, env_of


def test_the_playground_is_off_by_default(helm: Helm) -> None:
    assert "BARK_PLAYGROUND" not in env_of(container(helm.render(), "kserve-container"))


def test_playground_enabled_sets_bark_playground_on_the_predictor(helm: Helm) -> None:
    objects = helm.render("--set", "playground.enabled=true")
    assert env_of(container(objects, "kserve-container"))["BARK_PLAYGROUND"] == "true"


def test_playground_enabled_must_be_a_boolean(helm: Helm) -> None:
    result = helm.template("--set-string", "playground.enabled=yes")
    assert result.returncode != 0
    assert "playground.enabled" in result.stderr
