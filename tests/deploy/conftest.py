"""Session fixtures for the deploy tests (helpers live in deploy_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_helpers import VARIANTS, Helm, require_executable, values_args


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(require_executable("helm"))


@pytest.fixture(scope="session")
def renders(helm: Helm) -> dict[str, list[dict[str, Any]]]:
    """Each variant rendered once for the whole session."""
    return {variant: helm.render(*values_args(variant)) for variant in VARIANTS}
