"""Take the playground screenshots in docs/: `python -m tests.browser.screenshots [OUT_DIR]`.

Serves the tiny random-weight checkpoint (the offline demo: the audio is noise, the pipeline and
the timings are real) with the playground on, synthesizes once whole and once streamed in headless
Chromium, and saves the page after each as `playground.png` and `playground-streaming.png`; then a
two-speaker dialogue with its captions, paused on its third line, as `playground-dialogue.png`;
then a custom voice uploaded and a random speaker's take kept, as `playground-voices.png`; then a
wrong API key's 401 as `playground-error.png`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from model_server.tiny import build_checkpoint
from tests.browser.page import browser_paths, generate, open_page, set_field, set_stream, start_chromium, wait_for
from tests.serving import REPO_ROOT, running_server
from tests.voice_files import bark_arrays, savez

TEXT = (
    "Hello! I am Bark, a text-to-speech model, served here by KServe. "
    "I speak thirteen languages, and with streaming on you hear each sentence as soon as it is ready."
)
WIDTH = 1280
DEMO_KEY = "playground-demo-key"


def save_page(browser: Any, path: Path) -> None:
    """The whole page: the viewport is set to the document's height first (Chrome DevTools Protocol)."""
    metrics = {"width": WIDTH, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": 800})
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    browser.save_screenshot(str(path))
    print(f"wrote {path}")


def voices(browser: Any, folder: Path, path: Path) -> None:
    """A voice uploaded from the page, then a random speaker's take kept as `stranger`."""
    prompt = folder / "narrator.npz"
    prompt.write_bytes(savez(bark_arrays()))
    browser.execute_script("document.getElementById('upload-box').open = true")
    set_field(browser, "upload-name", "narrator")
    set_field(browser, "upload-description", "calm, low")
    set_field(browser, "upload-consent", "Recorded by Jane Doe, who agreed in writing on 2024-05-01.")
    browser.find_element("id", "upload-file").send_keys(str(prompt))
    browser.find_element("id", "upload-voice").click()
    wait_for(browser, "return document.getElementById('upload-status').dataset.state === 'done'")
    set_field(browser, "text", "A voice nobody has heard before. Keep it if you like it.")
    set_field(browser, "seed", "31337")
    browser.execute_script(
        "const v = document.getElementById('voice'); v.value = 'random'; v.dispatchEvent(new Event('change'))"
    )
    assert generate(browser)["state"] == "done"
    set_field(browser, "keep-name", "stranger")
    browser.find_element("id", "keep-voice").click()
    wait_for(browser, "return document.getElementById('keep-status').dataset.state === 'done'")
    save_page(browser, path)
    set_field(browser, "seed", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", nargs="?", type=Path, default=REPO_ROOT / "docs")
    args = parser.parse_args()
    paths = browser_paths()
    if paths is None:
        raise SystemExit("chromium and chromedriver are needed (scripts/install-tools.sh installs them)")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        checkpoint = build_checkpoint(folder / "bark-tiny")
        # With API keys on, as the chart deploys it: the page shows its key field.
        env = {"BARK_PLAYGROUND": "true", "BARK_API_KEYS": DEMO_KEY}
        with running_server(checkpoint, folder, env=env) as server:
            browser = start_chromium(*paths, folder / "profile")
            try:
                open_page(browser, server.url)
                set_field(browser, "api-key", DEMO_KEY)
                set_field(browser, "text", TEXT)
                set_stream(browser, False)
                assert generate(browser)["state"] == "done"
                wait_for(browser, "return document.getElementById('player').duration > 0")
                save_page(browser, args.out_dir / "playground.png")
                set_stream(browser, True)
                assert generate(browser)["state"] == "done"
                save_page(browser, args.out_dir / "playground-streaming.png")
                browser.execute_script("document.getElementById('dialogue-mode').click()")
                set_stream(browser, False)
                assert generate(browser)["state"] == "done"
                wait_for(browser, "return document.getElementById('player').duration > 0")
                browser.execute_script(
                    "const player = document.getElementById('player'); player.pause();"
                    "player.currentTime = Number(document.querySelectorAll('#captions li')[2].dataset.start) + 0.01;"
                )
                wait_for(browser, "return document.querySelectorAll('#captions li')[2].classList.contains('current')")
                save_page(browser, args.out_dir / "playground-dialogue.png")
                browser.execute_script("document.getElementById('dialogue-mode').click()")
                voices(browser, folder, args.out_dir / "playground-voices.png")
                set_field(browser, "api-key", "not-the-key")
                assert generate(browser)["state"] == "error"
                save_page(browser, args.out_dir / "playground-error.png")
            finally:
                browser.quit()


if __name__ == "__main__":
    main()
