"""Sentence splitting and chunk packing: no text lost, order kept, every chunk within budget."""

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_server.config import Settings
from model_server.generation import sentences, text
from model_server.generation.text import chunk_text, pack_chunks, plan_chunks, regex_split_sentences, split_sentences
from model_server.schema import SynthesisRequest
from tests.stub_engine import StubEngine, stub_service

# Words of scripts written with spaces (Latin, Greek, Cyrillic, digits): a Han, kana or Hangul run is
# measured per character and may be cut anywhere (see test_languages.py for those).
spaced_letters = st.characters(whitelist_categories=("L", "N"), max_codepoint=0x04FF, blacklist_characters="ªºᵃ")
words = st.text(alphabet=spaced_letters, min_size=1, max_size=12)
sentence = st.lists(words, min_size=1, max_size=25).map(lambda ws: " ".join(ws) + ".")


@given(st.lists(sentence, max_size=12), st.integers(min_value=1, max_value=40))
@settings(max_examples=200, deadline=None)
def test_packing_loses_no_word_and_keeps_order(sentences, max_words):
    chunks = pack_chunks(sentences, max_words)
    assert " ".join(chunks).split() == " ".join(sentences).split()


@given(st.lists(sentence, max_size=12), st.integers(min_value=1, max_value=40))
@settings(max_examples=200, deadline=None)
def test_every_chunk_is_within_budget(sentences, max_words):
    for chunk in pack_chunks(sentences, max_words):
        assert 1 <= len(chunk.split()) <= max_words


@given(st.lists(sentence, min_size=1, max_size=12), st.integers(min_value=5, max_value=40))
@settings(max_examples=200, deadline=None)
def test_short_sentences_are_never_cut(sentences, max_words):
    """A sentence that fits the budget ends up whole inside one chunk."""
    chunks = pack_chunks(sentences, max_words)
    for whole in (s for s in sentences if len(s.split()) <= max_words):
        assert any(whole in chunk for chunk in chunks)


def test_long_sentence_is_split_evenly_at_word_boundaries():
    sentence_of_25 = " ".join(f"w{i}" for i in range(25)) + "."
    chunks = pack_chunks([sentence_of_25], 10)
    assert [len(c.split()) for c in chunks] == [8, 9, 8]
    assert " ".join(chunks) == sentence_of_25


def test_a_single_word_over_the_budget_is_a_chunk_of_its_own():
    assert pack_chunks(["Supercalifragilistic"], 1) == ["Supercalifragilistic"]


def test_sentences_are_packed_up_to_the_budget():
    sentences = ["One two three.", "Four five.", "Six seven eight nine.", "Ten."]
    assert pack_chunks(sentences, 5) == ["One two three. Four five.", "Six seven eight nine. Ten."]


def test_punkt_keeps_abbreviations_inside_a_sentence():
    sentences = split_sentences("Dr. Smith went to Washington. He arrived at 5 p.m. on Monday! Was it late?")
    assert sentences[0] == "Dr. Smith went to Washington."
    assert sentences[-1] == "Was it late?"
    assert len(sentences) == 3


def test_offline_splitter_is_punkt_not_the_regex():
    """Without nltk data, the bundled pretrained Punkt parameters feed nltk's own tokenizer."""
    assert text.sentence_splitter("en")[0] == "punkt"
    assert {text.sentence_splitter(code)[0] for code in ("zh", "ko", "de")} == {"sentencex"}


def test_sentencex_stands_in_when_the_preferred_segmenter_is_missing(monkeypatch):
    monkeypatch.setitem(sentences._FACTORIES, "pysbd", lambda language: None)
    text.sentence_splitter.cache_clear()
    try:
        assert text.sentence_splitter("ja")[0] == "sentencex"
        assert split_sentences("今日は。明日は？", "ja") == ["今日は。", "明日は？"]
    finally:
        text.sentence_splitter.cache_clear()


def test_regex_fallback_is_used_and_warned_about_once(monkeypatch, caplog):
    for name in ("punkt", "sentencex", "pysbd"):
        monkeypatch.setitem(sentences._FACTORIES, name, lambda language: None)
    text.sentence_splitter.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="model_server.generation.sentences"):
            first = split_sentences("Hello world. How are you? Fine!")
            split_sentences("Again. And again.")
        assert first == ["Hello world.", "How are you?", "Fine!"]
        assert split_sentences("你好。再见！", "zh") == ["你好。", "再见！"]
        warnings = [r for r in caplog.records if "regex" in r.getMessage()]
        assert len(warnings) == 2, "once per language"
    finally:
        text.sentence_splitter.cache_clear()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("No terminal punctuation", ["No terminal punctuation"]),
        ("中文。没有空格！对吗？", ["中文。", "没有空格！", "对吗？"]),
        ("पहला। दूसरा॥ तीसरा", ["पहला।", "दूसरा॥", "तीसरा"]),
        ("  ", []),
    ],
)
def test_regex_fallback_splits_at_terminal_punctuation(raw, expected):
    assert regex_split_sentences(raw) == expected


def test_white_space_only_text_has_no_chunks():
    assert chunk_text(" \n\t ", 10) == []


def test_chunk_text_normalises_white_space():
    assert chunk_text("Hello\n\nworld.   Bye.", 10) == ["Hello world. Bye."]


def test_a_lone_surrogate_is_replaced_not_an_error():
    """JSON may carry a lone surrogate (\\ud800); the segmenters cannot encode it."""
    assert chunk_text("\ud800 Hello there. \udc00\ud83d\ude00 Bye.", 10) == [
        "\ufffd Hello there. \ufffd\U0001f600 Bye."
    ]


def test_text_with_nothing_to_say_has_no_chunks():
    assert chunk_text("... !!! 😀 —", 10) == []


def test_sentence_chunking_makes_every_sentence_a_chunk_and_still_cuts_a_long_one():
    text = "Short one. Another short sentence here! Long " + " ".join(["word"] * 30) + ". Last."
    packed = plan_chunks(text, max_words=20)
    rows = plan_chunks(text, max_words=20, one_sentence_per_chunk=True)
    assert [chunk.text for chunk in rows[:2]] == ["Short one.", "Another short sentence here!"]
    assert rows[-1].text == "Last."
    assert len(rows) == 5, "the 31-word sentence is cut in two at the 20-word limit"
    assert len(packed) < len(rows)
    assert " ".join(chunk.text for chunk in rows).split() == text.split(), "no word lost or moved"


@pytest.mark.parametrize(
    ("chunking", "device", "sentences"),
    [("auto", "cuda", True), ("auto", "cpu", False), ("sentence", "cpu", True), ("packed", "cuda", False)],
)
def test_bark_chunking_picks_sentence_rows_on_cuda_under_auto(chunking, device, sentences):
    config = Settings(chunking=chunking, warmup=False)
    engine = StubEngine(config)
    engine.device = torch.device(device)
    service = stub_service(config, engine)
    request = SynthesisRequest(prompt="One sentence. Two sentences here. And three.")
    assert len(service.plan(request).chunks) == (3 if sentences else 1)


def test_a_long_word_beside_another_is_still_cut_between_characters():
    """Hypothesis found it: a 41-digit number then a word, one word a chunk in German: cutting between
    words left the number whole (a piece twice the limit); it must be cut between characters."""
    chunks = plan_chunks("0" * 41 + " 0", max_words=1, language="de")
    assert "".join(chunk.text for chunk in chunks) == "0" * 42
    assert all(text.length_in_words(chunk.text, "de") <= 1.0 + 1e-9 for chunk in chunks)
