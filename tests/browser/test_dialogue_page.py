"""The playground's dialogue mode and captions, in headless Chromium against the real server.

Speakers each have a voice; the turns go to the server in order with their speaker's voice; the
captions (the server's timestamps) are listed under the player and the one being spoken is
highlighted, whether the audio streams in or plays from the <audio> element. The page keeps each
change of highlight as [seconds, index] in #captions' data-trace, checked here against the segments.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import API_KEY
from tests.browser.page import error_text, generate, open_page, set_field, set_stream, wait_for
from tests.serving import RunningServer

pytestmark = pytest.mark.timeout(180)

#: Slack for the page's clock against segment bounds (one animation frame and the ms rounding of the trace).
CLOCK_SLACK_S = 0.05


def open_dialogue(browser: Any, server: RunningServer, stream: bool) -> None:
    open_page(browser, server.url)
    set_field(browser, "api-key", API_KEY)
    set_stream(browser, stream)
    browser.execute_script("const box = document.getElementById('dialogue-mode'); if (!box.checked) box.click();")
    assert browser.find_element("id", "dialogue").is_displayed()
    assert not browser.find_element("id", "text").is_displayed()


def record_bodies(browser: Any) -> None:
    browser.execute_script(
        "window.sentBodies = []; const realFetch = window.fetch;"
        "window.fetch = (url, options) => {"
        "  if (options && options.body) window.sentBodies.push(JSON.parse(options.body));"
        "  return realFetch(url, options); };"
    )


def set_speaker_voice(browser: Any, index: int, voice: str) -> None:
    browser.execute_script(
        "const select = document.querySelectorAll('#speakers select')[arguments[0]];"
        "select.value = arguments[1]; select.dispatchEvent(new Event('change'));",
        index,
        voice,
    )


def add_turn(browser: Any, text: str) -> None:
    browser.find_element("id", "add-turn").click()
    browser.execute_script(
        "const boxes = document.querySelectorAll('#turns textarea'); const box = boxes[boxes.length - 1];"
        "box.value = arguments[0]; box.dispatchEvent(new Event('input'));",
        text,
    )


def captions(browser: Any) -> list[dict[str, Any]]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#captions li')].map(li => ({"
        " start: Number(li.dataset.start), who: li.querySelector('.who')?.textContent ?? null,"
        " text: li.querySelector('.said').textContent, current: li.classList.contains('current')}))"
    )


def trace(browser: Any) -> list[list[float]]:
    return json.loads(browser.execute_script("return document.getElementById('captions').dataset.trace"))


def check_trace_follows_the_segments(entries: list[list[float]], starts: list[float]) -> None:
    """Each highlight is the segment started last at that moment of the audio."""
    for seconds, index in entries:
        index = int(index)
        if index < 0:
            assert seconds < starts[0] + CLOCK_SLACK_S
            continue
        assert starts[index] <= seconds + CLOCK_SLACK_S, (seconds, index, starts)
        if index + 1 < len(starts):
            assert seconds < starts[index + 1] + CLOCK_SLACK_S, (seconds, index, starts)


def test_a_dialogue_goes_out_turn_by_turn_in_each_speakers_voice(
    browser: Any, playground_server: RunningServer
) -> None:
    open_dialogue(browser, playground_server, stream=False)
    set_speaker_voice(browser, 0, "v2/en_speaker_3")
    set_speaker_voice(browser, 1, "v2/de_speaker_2")
    add_turn(browser, "And this turn was added last.")
    record_bodies(browser)
    result = generate(browser)
    assert result["state"] == "done", error_text(browser)
    (body,) = browser.execute_script("return window.sentBodies")
    (instance,) = body["instances"]
    assert "prompt" not in instance and instance["timestamps"] is True
    voices = [turn["voice"] for turn in instance["turns"]]
    # The starter exchange is A, B, A; "Add turn" goes to the speaker after the last one: B.
    assert voices == ["v2/en_speaker_3", "v2/de_speaker_2", "v2/en_speaker_3", "v2/de_speaker_2"]
    assert instance["turns"][-1]["text"] == "And this turn was added last."
    assert instance["turn_pause_ms"] == int(browser.find_element("id", "turn_pause_ms").get_attribute("value"))
    shown = captions(browser)
    said = " ".join(turn["text"] for turn in instance["turns"])
    assert " ".join(item["text"] for item in shown).split() == said.split()
    assert {item["who"] for item in shown} == {"Speaker A", "Speaker B"}
    assert browser.find_element("id", "captions-box").is_displayed()


def test_captions_follow_the_players_clock_when_seeking(browser: Any, playground_server: RunningServer) -> None:
    open_dialogue(browser, playground_server, stream=False)
    assert generate(browser)["state"] == "done", error_text(browser)
    wait_for(browser, "return document.getElementById('player').duration > 0")
    starts = [item["start"] for item in captions(browser)]
    assert len(starts) >= 3
    browser.execute_script("document.getElementById('player').pause()")
    for index in (len(starts) - 1, 1, 0):  # out of order: a seek back must move the highlight back
        middle = starts[index] + 0.01
        browser.execute_script("document.getElementById('player').currentTime = arguments[0]", middle)
        wait_for(
            browser,
            f"return document.querySelectorAll('#captions li')[{index}].classList.contains('current')"
            " && document.querySelectorAll('#captions li.current').length === 1",
            timeout=10,
        )
    check_trace_follows_the_segments(trace(browser), starts)


def test_a_streamed_dialogue_highlights_each_caption_as_it_plays(
    browser: Any, playground_server: RunningServer
) -> None:
    open_dialogue(browser, playground_server, stream=True)
    result = generate(browser)
    assert result["state"] == "done", error_text(browser)
    assert int(result["captionsAtFirstAudio"]) >= 1, "a chunk's captions arrive before its audio"
    starts = [item["start"] for item in captions(browser)]
    last = len(starts) - 1
    # Played through on the Web Audio clock: the highlight reaches the last caption...
    reached = f"return JSON.parse(document.getElementById('captions').dataset.trace).some(e => e[1] === {last})"
    wait_for(browser, reached)
    entries = trace(browser)
    indexes = [int(index) for _, index in entries if index >= 0]
    # ...having moved forward through them in order, each at its own time.
    assert indexes == sorted(indexes) and indexes[0] == 0 and len(set(indexes)) >= 2
    check_trace_follows_the_segments(entries, starts)


def test_a_bad_turn_shows_the_servers_400_naming_it(browser: Any, playground_server: RunningServer) -> None:
    open_dialogue(browser, playground_server, stream=False)
    add_turn(browser, "   ")
    result = generate(browser)
    assert result["state"] == "error" and result["errorStatus"] == "400"
    assert "instances[0].turns[3].text: must not be empty" in error_text(browser)


def test_removing_a_speaker_removes_their_turns_and_the_count_is_over_all_turns(
    browser: Any, playground_server: RunningServer
) -> None:
    open_dialogue(browser, playground_server, stream=True)
    texts = browser.execute_script("return [...document.querySelectorAll('#turns textarea')].map(t => t.value)")
    count = browser.find_element("id", "char-count").text.replace(",", "")
    assert count.startswith(f"{sum(len(text) for text in texts)} / ")
    browser.execute_script("document.querySelectorAll('#speakers .remove')[1].click()")
    left = browser.execute_script("return document.querySelectorAll('#turns li').length")
    assert left == 2, "Speaker B's one turn went with them"
    assert browser.execute_script("return document.querySelector('#speakers .remove').disabled"), "one speaker stays"
