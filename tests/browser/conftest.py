"""Fixtures for the playground tests: headless Chromium (Debian's, via chromedriver) and real servers.

Chromium comes from the system (`scripts/install-tools.sh` installs `chromium` and `chromium-driver`).
Where it is missing the tests skip on a laptop but FAIL under CI (env `CI` set), so a runner
without a browser cannot pass them silently.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.page import browser_paths, start_chromium
from tests.serving import RunningServer, running_server

#: The key the server with auth on accepts.
API_KEY = "playground-test-key"
#: The page's tests need no warm-up generation before the server turns ready: it only slows the start.
NO_WARMUP = {"BARK_WARMUP": "false"}


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One headless Chromium for the session, with a fresh profile and its console log kept."""
    paths = browser_paths()
    missing = [] if paths else ["chromium and chromedriver (scripts/install-tools.sh installs them)"]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install -e '.[test]')")
    if paths is None or missing:
        message = f"the browser tests need {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; under CI a missing browser is a failure, not a skip")
        pytest.skip(message)
    driver = start_chromium(*paths, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def playground_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real server with the playground on and API keys required (so a wrong key is a 401)."""
    env = {"BARK_PLAYGROUND": "true", "BARK_API_KEYS": API_KEY, **NO_WARMUP}
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("playground-logs"), env=env) as running:
        yield running


@pytest.fixture(scope="session")
def server_without_playground(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The real server with BARK_PLAYGROUND explicitly off (the default)."""
    env = {"BARK_PLAYGROUND": "false", **NO_WARMUP}
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("no-playground-logs"), env=env) as running:
        yield running
