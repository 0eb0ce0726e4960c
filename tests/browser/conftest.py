"""Fixtures for the playground tests: headless Chromium (Debian's, via chromedriver) and real servers.

Chromium comes from the system (`scripts/install-tools.sh` installs `chromium` and `chromium-driver`).
Where it is missing the tests skip on a laptop but FAIL under CI (env `CI` set), so a runner
without a browser cannot pass them silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import RunningServer, running_server

#: The key the server with auth on accepts.
API_KEY = "playground-test-key"

# Without the background-networking flags Chromium waits on update and sync services that the
# closed network never answers; autoplay is allowed so audio starts without a real user gesture.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,1000",
)


def _browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One headless Chromium for the session, with a fresh profile and its console log kept."""
    paths = _browser_paths()
    if paths is None:
        message = "chromium and chromedriver are needed (scripts/install-tools.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; under CI a missing browser is a failure, not a skip")
        pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def playground_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real server with the playground on and API keys required (so a wrong key is a 401)."""
    env = {"BARK_PLAYGROUND": "true", "BARK_API_KEYS": API_KEY}
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("playground-logs"), env=env) as running:
        yield running


@pytest.fixture(scope="session")
def server_without_playground(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The real server with BARK_PLAYGROUND explicitly off (the default)."""
    env = {"BARK_PLAYGROUND": "false"}
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("no-playground-logs"), env=env) as running:
        yield running
