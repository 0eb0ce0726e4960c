"""Driving the playground page: start Chromium, open the page, fill the form, run a synthesis.

Shared by the browser tests and `python -m tests.browser.screenshots` (the images in docs/).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

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
    "--hide-scrollbars",
)


def browser_paths() -> tuple[str, str] | None:
    """Chromium and chromedriver (Debian's `chromium` and `chromium-driver` packages), or None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    return (chromium, driver) if chromium and driver else None


def start_chromium(chromium: str, driver_path: str, profile_dir: Path) -> Any:
    """Headless Chromium with a fresh profile, its console log kept (`driver.get_log('browser')`)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    return driver


def wait_for(browser: Any, script: str, timeout: float = 60.0) -> Any:
    """Poll `script` (JavaScript returning a value) until it is truthy; return that value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda driver: driver.execute_script(script))


def error_text(browser: Any) -> str:
    return str(browser.execute_script("const e = document.getElementById('error'); return e.hidden ? '' : e.innerText"))


def open_page(browser: Any, base_url: str) -> None:
    """Load /playground/ and wait until it has read its config and the voices."""
    browser.get(f"{base_url}/playground/")
    wait_for(browser, "return document.body.dataset.ready === 'true' || !document.getElementById('error').hidden")
    assert browser.execute_script("return document.body.dataset.ready") == "true", error_text(browser)


def set_field(browser: Any, element_id: str, value: str) -> None:
    """Set an input's value the way typing does (an `input` event), so the page reacts to it."""
    browser.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));",
        element_id,
        value,
    )


def set_stream(browser: Any, on: bool) -> None:
    browser.execute_script(
        "const box = document.getElementById('stream'); if (box.checked !== arguments[0]) box.click();", on
    )


def generate(browser: Any) -> dict[str, str]:
    """Click Generate, wait for the run to end, and return #result-card's data attributes."""
    browser.find_element("id", "generate").click()
    wait_for(
        browser, "return ['done', 'error', 'stopped'].includes(document.getElementById('result-card').dataset.state)"
    )
    return dict(browser.execute_script("return {...document.getElementById('result-card').dataset}"))
