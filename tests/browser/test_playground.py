"""The playground page in a real browser (headless Chromium) against the real server on the tiny checkpoint.

The page records each run's timestamps as data-* attributes on #result-card (milliseconds since the
click): these tests read them to check that streamed audio starts playing before the request ends.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from model_server.http.openai_speech.protocol import SpeechRequest
from model_server.schema import SynthesisRequest
from tests.browser.conftest import API_KEY
from tests.browser.page import error_text, generate, open_page, set_field, set_stream, wait_for
from tests.serving import RunningServer

pytestmark = pytest.mark.timeout(120)

PAGE_FILES = (
    "",
    "index.html",
    "playground.js",
    "api.js",
    "audio.js",
    "dialogue.js",
    "captions.js",
    "playground.css",
    "config.json",
)
# The first sentence is streamed as its own chunk; the long second one takes longer to generate.
TWO_SENTENCES = (
    "Hello there. This second sentence is much longer, so it is still being generated while the first one"
    " has already started playing in the browser."
)


def severe_console_entries(browser: Any) -> list[dict[str, Any]]:
    """Console errors (a CSP violation is one); reading the log also empties it."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


# -- the page and its headers ------------------------------------------------------------------


def test_page_loads_without_a_key_and_lists_voices_grouped_by_language(
    browser: Any, playground_server: RunningServer
) -> None:
    browser.get_log("browser")
    open_page(browser, playground_server.url)
    listing = httpx.get(f"{playground_server.url}/v1/audio/voices").json()
    groups = browser.execute_script(
        "return [...document.querySelectorAll('#voice optgroup')]"
        ".map(group => [group.label, [...group.children].map(option => option.value)])"
    )
    by_language = {label: values for label, values in groups}
    expected: dict[str, list[str]] = {}
    for voice in listing["voices"]:
        expected.setdefault(voice["language_name"], []).append(voice["name"])
    for language, names in expected.items():
        assert by_language[language] == names
    assert by_language["OpenAI voice names"] == list(listing["aliases"])
    assert browser.find_element("id", "voice").get_attribute("value") == SynthesisRequest.model_fields["voice"].default
    # Keys are on for this server, so the key field shows; the page itself needed none.
    assert browser.find_element("id", "key-card").is_displayed()
    assert severe_console_entries(browser) == []


def test_limits_and_setting_bounds_come_from_the_server(browser: Any, playground_server: RunningServer) -> None:
    open_page(browser, playground_server.url)
    config = httpx.get(f"{playground_server.url}/playground/config.json").json()
    schema = SynthesisRequest.model_json_schema()["properties"]
    for name in ("semantic_temperature", "coarse_temperature", "fine_temperature"):
        element = browser.find_element("id", name)
        assert float(element.get_attribute("min")) == schema[name]["minimum"]
        assert float(element.get_attribute("max")) == schema[name]["maximum"]
        assert float(element.get_attribute("value")) == schema[name]["default"]
    speed = SpeechRequest.model_json_schema()["properties"]["speed"]
    assert float(browser.find_element("id", "speed").get_attribute("max")) == speed["maximum"]
    formats = browser.execute_script("return [...document.querySelectorAll('#format option')].map(o => o.value)")
    assert formats == [entry["name"] for entry in config["formats"]]
    set_field(browser, "text", "x" * 12)
    count = browser.find_element("id", "char-count").text.replace(",", "")
    assert count == f"12 / {config['max_prompt_chars']} characters"


def test_a_stream_shows_pcm_and_the_chosen_format_comes_back(browser: Any, playground_server: RunningServer) -> None:
    open_page(browser, playground_server.url)
    set_stream(browser, False)
    browser.execute_script("document.getElementById('format').value = 'mp3'")
    set_stream(browser, True)
    fmt = browser.find_element("id", "format")
    assert (fmt.get_attribute("value"), fmt.is_enabled()) == ("pcm", False)
    assert browser.find_element("id", "semantic_temperature").is_enabled()  # Bark extensions on the OpenAI route
    set_stream(browser, False)
    assert (fmt.get_attribute("value"), fmt.is_enabled()) == ("mp3", True)
    assert not browser.find_element("id", "speed").is_enabled()  # v1 predict takes no speed


class _InlineCode(HTMLParser):
    """Collects what a strict CSP would block (inline scripts, <style> blocks, style= and on*= attributes)
    and every URL the page links to."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        self.urls += [value for name, value in attrs if name in ("href", "src") and value]
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag}[{name}]" for name in names if name == "style" or name.startswith("on")]


def test_every_page_file_has_strict_security_headers_and_the_page_no_inline_code(
    playground_server: RunningServer,
) -> None:
    for name in PAGE_FILES:
        response = httpx.get(f"{playground_server.url}/playground/{name}")  # no API key: static files are public
        assert response.status_code == 200, name
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "default-src 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in policy
    page = _InlineCode()
    page.feed(httpx.get(f"{playground_server.url}/playground/").text)
    assert page.found == []
    for url in page.urls:  # same-origin, relative links only, and each one answers
        assert "//" not in url, url
        assert httpx.get(f"{playground_server.url}/playground/{url}").status_code == 200, url
    bare = httpx.get(f"{playground_server.url}/playground")
    assert bare.status_code == 308 and bare.headers["location"] == "playground/"


def test_the_page_is_a_404_when_the_playground_is_off(server_without_playground: RunningServer) -> None:
    for path in ("/playground", "/playground/", "/playground/config.json", "/playground/playground.js"):
        assert httpx.get(f"{server_without_playground.url}{path}").status_code == 404, path


# -- synthesis -----------------------------------------------------------------------------------


def test_whole_synthesis_fills_the_audio_element_and_the_timing_line(
    browser: Any, playground_server: RunningServer
) -> None:
    open_page(browser, playground_server.url)
    set_field(browser, "api-key", API_KEY)
    set_stream(browser, False)
    set_field(browser, "text", "A short test.")
    result = generate(browser)
    assert result["state"] == "done", error_text(browser)
    duration = wait_for(browser, "const p = document.getElementById('player'); return p.duration > 0 && p.duration")
    assert duration > 0
    assert browser.find_element("id", "timing").is_displayed()
    timing = {key: browser.find_element("id", key).text for key in ("t-first", "t-total", "t-audio", "t-rtf")}
    assert all(re.fullmatch(r"\d+\.\d\d( s|×)", value) for value in timing.values()), timing
    assert float(timing["t-audio"].split()[0]) == pytest.approx(duration, abs=0.02)
    link = browser.find_element("id", "download")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download").endswith(".wav")


def test_a_long_whole_synthesis_shows_its_progress_while_it_runs(
    browser: Any, playground_server: RunningServer
) -> None:
    open_page(browser, playground_server.url)
    set_field(browser, "api-key", API_KEY)
    set_stream(browser, False)
    set_field(browser, "batch_chunk_size", "3")
    set_field(browser, "text", " ".join(f"Sentence number {index} ends here." for index in range(10)))
    browser.find_element("id", "generate").click()
    shown = wait_for(
        browser,
        "const p = document.getElementById('progress');"
        " return !p.hidden && document.getElementById('progress-text').textContent",
    )
    assert re.fullmatch(r"Generating: \d+ of \d+ chunks", shown), shown
    result = wait_for(
        browser,
        "const c = document.getElementById('result-card'); return c.dataset.state !== 'running' && {...c.dataset}",
    )
    assert result["state"] == "done", error_text(browser)
    chunks = int(re.search(r"\((\d+) chunks", browser.find_element("id", "route-note").text).group(1))  # type: ignore[union-attr]
    assert int(result["progressPolls"]) >= 1
    assert result["progressShown"].endswith(f"/{chunks}"), (result["progressShown"], chunks)
    assert not browser.find_element("id", "progress").is_displayed(), "the bar goes when the audio comes"
    # A poll that comes before the chunks are queued is a 404 (logged by the browser, not an error).
    assert [entry for entry in severe_console_entries(browser) if "/progress" not in entry["message"]] == []


def test_streaming_starts_playing_before_the_request_has_finished(
    browser: Any, playground_server: RunningServer
) -> None:
    open_page(browser, playground_server.url)
    set_field(browser, "api-key", API_KEY)
    set_stream(browser, True)
    set_field(browser, "text", TWO_SENTENCES)
    result = generate(browser)
    assert result["state"] == "done", error_text(browser)
    # The first sentence was scheduled on the audio clock while later audio was still on its way...
    assert int(result["pieces"]) >= 2
    assert float(result["firstAudioMs"]) < float(result["lastDataMs"]) <= float(result["doneMs"])
    # ...and the clock was running: it had played some of it by the time the last bytes came.
    assert result["audioContextState"] == "running"
    assert float(result["playedBeforeLastData"]) > 0
    assert browser.find_element("id", "timing").is_displayed()
    duration = wait_for(browser, "const p = document.getElementById('player'); return p.duration > 0 && p.duration")
    assert duration > 0  # the whole take, as WAV, for replay and download


def test_stop_ends_a_stream_that_is_playing(browser: Any, playground_server: RunningServer) -> None:
    open_page(browser, playground_server.url)
    set_field(browser, "api-key", API_KEY)
    set_stream(browser, True)
    set_field(browser, "text", " ".join([TWO_SENTENCES] * 4))
    browser.find_element("id", "generate").click()
    wait_for(browser, "return document.getElementById('result-card').dataset.firstAudioMs")
    browser.find_element("id", "stop").click()
    state = wait_for(
        browser, "const s = document.getElementById('result-card').dataset.state; return s !== 'running' && s"
    )
    assert state == "stopped"
    assert "doneMs" not in browser.execute_script("return {...document.getElementById('result-card').dataset}")
    assert browser.find_element("id", "generate").is_enabled()


# -- errors and the key --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_empty_text_shows_the_servers_400_message(browser: Any, playground_server: RunningServer, stream: bool) -> None:
    open_page(browser, playground_server.url)
    set_field(browser, "api-key", API_KEY)
    set_stream(browser, stream)
    set_field(browser, "text", "   ")
    result = generate(browser)
    assert result["state"] == "error" and result["errorStatus"] == "400"
    message = error_text(browser)
    assert "rejected the request (400)" in message and "must not be empty" in message


def test_a_wrong_key_shows_the_401_message(browser: Any, playground_server: RunningServer) -> None:
    open_page(browser, playground_server.url)
    set_field(browser, "api-key", "not-the-key")
    set_stream(browser, True)
    result = generate(browser)
    assert result["state"] == "error" and result["errorStatus"] == "401"
    message = error_text(browser)
    assert "API key missing or not accepted (401)" in message and "Enter a valid key" in message


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (503, {"Retry-After": "7"}, ["busy or not ready (503)", "queue is full", "Retry after 7 s."]),
        (504, {}, ["timed out on the server (504)", "request_timeout_s"]),
    ],
)
def test_busy_and_timeout_answers_are_readable(
    browser: Any, playground_server: RunningServer, status: int, headers: dict[str, str], expected: list[str]
) -> None:
    """The server's 503 and 504 need load or a slow model to provoke; here the page gets them from a stubbed fetch."""
    open_page(browser, playground_server.url)
    messages = {503: "queue is full: 512 chunks waiting", 504: "request took longer than request_timeout_s"}
    browser.execute_script(
        "const [status, headers, message] = arguments;"
        "window.fetch = async () => new Response("
        "  JSON.stringify({error: {message, type: 'server_error', param: null, code: null}}),"
        "  {status, headers: {...headers, 'Content-Type': 'application/json'}});",
        status,
        headers,
        messages[status],
    )
    result = generate(browser)
    assert result["state"] == "error" and result["errorStatus"] == str(status)
    message = error_text(browser)
    for part in expected:
        assert part in message


def test_a_stream_sends_the_sampling_settings_to_the_openai_route(
    browser: Any, playground_server: RunningServer
) -> None:
    open_page(browser, playground_server.url)
    set_field(browser, "api-key", API_KEY)
    set_stream(browser, True)
    set_field(browser, "text", "A seeded stream.")
    set_field(browser, "seed", "42")
    browser.execute_script(
        "window.sentBodies = []; const realFetch = window.fetch;"
        "window.fetch = (url, options) => {"
        "  if (options && options.body) window.sentBodies.push(JSON.parse(options.body));"
        "  return realFetch(url, options); };"
    )
    result = generate(browser)
    assert result["state"] == "done", error_text(browser)
    (body,) = browser.execute_script("return window.sentBodies")
    assert body["seed"] == 42 and body["stream_format"] == "sse" and body["timestamps"] is True
    assert {"do_sample", "semantic_temperature", "coarse_temperature", "fine_temperature"} <= set(body)


def test_the_api_key_stays_in_session_storage_only(browser: Any, playground_server: RunningServer) -> None:
    open_page(browser, playground_server.url)
    browser.get_log("browser")
    field = browser.find_element("id", "api-key")
    field.clear()
    field.send_keys(API_KEY)
    set_stream(browser, True)
    set_field(browser, "text", "Key check.")
    assert generate(browser)["state"] == "done", error_text(browser)
    storage = browser.execute_script(
        "return [sessionStorage.getItem('bark-playground-api-key'), localStorage.length, document.cookie]"
    )
    assert storage == [API_KEY, 0, ""]
    assert API_KEY not in browser.current_url
    assert all(API_KEY not in entry["message"] for entry in browser.get_log("browser"))
    assert API_KEY not in playground_server.log()
    browser.refresh()  # kept for this tab's session
    wait_for(browser, "return document.body.dataset.ready === 'true'")
    assert browser.find_element("id", "api-key").get_attribute("value") == API_KEY
