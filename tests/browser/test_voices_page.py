"""The playground's custom voices in headless Chromium against the real server (API keys on).

Upload a speaker prompt from the page, find it in the voice list (and in every dialogue speaker's),
speak with it, delete it; a bad upload shows the server's reason and stores nothing; "Keep this voice"
after a take keeps exactly that take's voice (the same .npz as asking the API with `save_voice`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.browser.conftest import API_KEY
from tests.browser.page import error_text, generate, open_page, set_field, set_stream, wait_for
from tests.serving import RunningServer
from tests.voice_files import bark_arrays, savez

pytestmark = pytest.mark.timeout(240)

VOICES = "/v1/audio/voices"
HEADERS = {"authorization": f"Bearer {API_KEY}"}


def custom_options(browser: Any) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#voice optgroup[data-custom] option')].map(o => o.value)"
    )


def own_rows(browser: Any) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#custom-voices li')].map(li => li.dataset.voice)"
    )


def open_with_key(browser: Any, server: RunningServer) -> None:
    open_page(browser, server.url)
    set_field(browser, "api-key", API_KEY)
    wait_for(browser, "return document.getElementById('voice').options.length > 0")


def upload_in_page(browser: Any, name: str, file: Path, consent: str = "The speaker agreed.") -> dict[str, str]:
    browser.execute_script("document.getElementById('upload-box').open = true")
    set_field(browser, "upload-name", name)
    set_field(browser, "upload-consent", consent)
    browser.find_element("id", "upload-file").send_keys(str(file))
    browser.execute_script("document.getElementById('upload-status').dataset.state = 'waiting'")
    browser.find_element("id", "upload-voice").click()
    wait_for(browser, "return document.getElementById('upload-status').dataset.state !== 'waiting'")
    return dict(
        browser.execute_script(
            "const s = document.getElementById('upload-status'); return {...s.dataset, text: s.textContent}"
        )
    )


def listed(server: RunningServer) -> set[str]:
    voices = httpx.get(server.url + VOICES, headers=HEADERS, timeout=10).json()["voices"]
    return {voice["name"] for voice in voices if voice.get("custom")}


def test_an_uploaded_voice_is_listed_spoken_with_and_deleted(browser, playground_server, tmp_path):
    file = tmp_path / "voice.npz"
    file.write_bytes(savez(bark_arrays(seed=9)))
    open_with_key(browser, playground_server)
    status = upload_in_page(browser, "page-upload", file)
    assert status["state"] == "done" and "Uploaded page-upload (309 tokens, 464 frames)" in status["text"]
    wait_for(browser, "return [...document.querySelectorAll('#custom-voices li')].length > 0")
    assert "page-upload" in custom_options(browser) and "page-upload" in own_rows(browser)
    assert browser.execute_script("return document.getElementById('voice').value") == "page-upload"
    assert "page-upload · custom" in browser.find_element("id", "voice-detail").text
    # Every dialogue speaker may pick it too.
    speaker_options = browser.execute_script(
        "return [...document.querySelector('#speakers select').options].map(o => o.value)"
    )
    assert "page-upload" in speaker_options and "random" in speaker_options
    set_stream(browser, False)
    result = generate(browser)
    assert result["state"] == "done", error_text(browser)
    browser.find_element("css selector", "#custom-voices button[data-voice='page-upload']").click()
    wait_for(browser, "return !document.querySelector(\"#custom-voices li[data-voice='page-upload']\")")
    assert "page-upload" not in custom_options(browser)
    assert "page-upload" not in listed(playground_server)


@pytest.mark.parametrize(
    ("arrays", "consent", "expected"),
    [
        ({**bark_arrays(), "fine_prompt": np.zeros((8, 464), np.float32)}, "Agreed.", "integer tokens, not float32"),
        (bark_arrays(), "", "consent"),
    ],
    ids=["a float array", "no consent"],
)
def test_a_bad_upload_shows_the_servers_reason_and_stores_nothing(
    browser, playground_server, tmp_path, arrays, consent, expected
):
    file = tmp_path / "bad.npz"
    file.write_bytes(savez(arrays))
    open_with_key(browser, playground_server)
    before = listed(playground_server)
    status = upload_in_page(browser, "bad-upload", file, consent)
    assert status["state"] == "error" and expected in status["text"], status
    assert listed(playground_server) == before and "bad-upload" not in custom_options(browser)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_keep_this_voice_keeps_exactly_the_take_just_heard(browser, playground_server, stream):
    text = "A voice nobody has heard before. It should be kept."
    name = f"kept-{'stream' if stream else 'whole'}"
    open_with_key(browser, playground_server)
    set_stream(browser, stream)
    set_field(browser, "text", text)
    set_field(browser, "seed", "4242")
    browser.execute_script(
        "const v = document.getElementById('voice'); v.value = 'random'; v.dispatchEvent(new Event('change'))"
    )
    assert generate(browser)["state"] == "done", error_text(browser)
    assert browser.find_element("id", "keep-box").is_displayed()
    assert "Seed 4242." in browser.find_element("id", "route-note").text
    set_field(browser, "keep-name", name)
    browser.find_element("id", "keep-voice").click()
    wait_for(browser, "return ['done', 'error'].includes(document.getElementById('keep-status').dataset.state)")
    assert f"Kept as {name}" in browser.find_element("id", "keep-status").text
    assert name in custom_options(browser)
    # The API, asked for the same take with save_voice, keeps the same tokens: the page kept this take.
    with httpx.Client(base_url=playground_server.url, headers=HEADERS, timeout=120) as client:
        sampling = {"seed": 4242, "do_sample": True, "save_voice": {"name": f"{name}-api"}}
        if stream:
            body = {"input": text, "voice": "random", "stream": True, "response_format": "pcm", **sampling}
            assert client.post("/v1/audio/speech", json=body).status_code == 200
        else:
            body = {"instances": [{"prompt": text, "voice": "random", **sampling}]}
            assert client.post("/v1/models/bark:predict", json=body).status_code == 200
        kept, direct = (client.get(f"{VOICES}/{voice}").content for voice in (name, f"{name}-api"))
    assert kept == direct


def test_the_continuity_switch_holds_the_voice_across_chunks(browser, playground_server):
    open_with_key(browser, playground_server)
    set_stream(browser, False)
    browser.execute_script(
        "window.sentBodies = []; const realFetch = window.fetch;"
        "window.fetch = (url, options) => {"
        "  if (options && typeof options.body === 'string') window.sentBodies.push(JSON.parse(options.body));"
        "  return realFetch(url, options); };"
    )
    browser.execute_script("document.getElementById('continuity').click()")
    set_field(browser, "batch_chunk_size", "3")
    assert generate(browser)["state"] == "done", error_text(browser)
    bodies = browser.execute_script("return window.sentBodies")
    instance = bodies[-1]["instances"][0]
    assert instance["continuity"] == "previous" and isinstance(instance["seed"], int)
