"""Every language Bark speaks: sentences, chunk lengths, token budgets and the language of a request."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bark_common.errors import InvalidInput
from bark_common.schema import BARK_LANGUAGES, SynthesisRequest
from model_server.config import Settings
from model_server.generation.languages import LANGUAGES, language_of, resolve_language
from model_server.generation.limits import SEMANTIC_TOKENS_PER_SECOND, check_words_per_request
from model_server.generation.text import (
    MAX_CHUNK_SECONDS,
    chunk_limit,
    chunk_text,
    length_in_words,
    plan_chunks,
    request_words,
    speech_seconds,
    split_sentences,
)
from model_server.synthesis import ChunkPayload, SynthesisService
from model_server.tiny import TINY_VOICE_PRESETS
from tests.language_samples import LONG_JA, LONG_ZH, SENTENCES, joiner, paragraph
from tests.stub_engine import StubEngine, stub_model

CODES = sorted(LANGUAGES)
ISSUE_EXAMPLE = "今天天气很好。我们去公园散步吧！你觉得怎么样？这是一个很长的句子，用来测试中文的分句和分块是否正确。"


def spoken(text: str) -> str:
    """What must survive chunking: the text without white space."""
    return re.sub(r"\s+", "", text)


def plan(
    prompt: str, language: str | None = None, voice: str = "v2/en_speaker_1", batch_chunk_size: int | None = None
) -> list[ChunkPayload]:
    """SynthesisService.plan with the default settings (budgets as in production) on the stub engine."""
    defaults = Settings(warmup=False)
    tts = SynthesisService(defaults, StubEngine(defaults), lambda *_: None)  # type: ignore[arg-type]
    fields = {"prompt": prompt, "voice": voice, "language": language, "batch_chunk_size": batch_chunk_size}
    return tts.plan(SynthesisRequest.model_validate(fields)).chunks


def test_the_supported_set_is_barks_13_languages_in_both_places():
    assert set(LANGUAGES) == set(BARK_LANGUAGES) == set(SENTENCES)
    assert len(LANGUAGES) == 13


@pytest.mark.parametrize("code", CODES)
def test_sentences_split_where_the_paragraph_has_them(code):
    assert split_sentences(paragraph(code), code) == SENTENCES[code]


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        ("hi", "पहला वाक्य। दूसरा वाक्य॥ तीसरा?", ["पहला वाक्य।", "दूसरा वाक्य॥", "तीसरा?"]),
        ("es", "¿Vienes? ¡Claro que sí! Vale.", ["¿Vienes?", "¡Claro que sí!", "Vale."]),
        ("en", "It costs 3.50 dollars. Pi is 3.14159!", ["It costs 3.50 dollars.", "Pi is 3.14159!"]),
        # A Chinese sentence inside an English-voiced text still ends at its full stop.
        ("en", "Hello there. 你好。再见！Bye.", ["Hello there.", "你好。", "再见！", "Bye."]),
        ("zh", ISSUE_EXAMPLE, ["今天天气很好。", "我们去公园散步吧！", "你觉得怎么样？", ISSUE_EXAMPLE[23:]]),
    ],
)
def test_terminal_punctuation_of_every_script(code, text, expected):
    assert split_sentences(text, code) == expected


def test_the_issue_example_is_several_sentences_with_budgets_for_all_of_it():
    """Was: one chunk counted as one word, a 50-token (1 s) budget for 11 s of Chinese."""
    chunks = plan(ISSUE_EXAMPLE, voice="v2/zh_speaker_1")
    assert len(chunks) == 2
    assert spoken("".join(chunk.text for chunk in chunks)) == spoken(ISSUE_EXAMPLE)
    estimated = speech_seconds(ISSUE_EXAMPLE, "zh")
    assert estimated > 10  # 51 characters at 4.5 per second
    assert sum(chunk.budget for chunk in chunks) / SEMANTIC_TOKENS_PER_SECOND >= estimated
    assert all(chunk.budget > 50 for chunk in chunks)


@pytest.mark.parametrize("code", CODES)
def test_chunks_stay_within_their_limit_and_keep_every_character(code):
    text = joiner(code).join([paragraph(code)] * 5)
    for max_words in (3, 20, 60):
        chunks = plan_chunks(text, max_words, code)
        limit = chunk_limit(max_words, code)
        assert all(0 < length_in_words(chunk.text, code) <= limit + 1e-9 for chunk in chunks), (max_words, chunks)
        assert all(0 < chunk.seconds <= MAX_CHUNK_SECONDS for chunk in chunks)
        assert spoken("".join(chunk.text for chunk in chunks)) == spoken(text)
    assert len(plan_chunks(text, 20, code)) >= 3


@pytest.mark.parametrize("code", CODES)
def test_budgets_are_no_shorter_than_the_estimated_speech(code):
    text = joiner(code).join([paragraph(code)] * 3)
    voice = f"v2/{code}_speaker_0"
    for size in (None, 3, 60):  # the default 20 words, the smallest and the largest batch_chunk_size
        for chunk in plan(text, voice=voice, batch_chunk_size=size):
            seconds = speech_seconds(chunk.text, code)
            assert chunk.budget / SEMANTIC_TOKENS_PER_SECOND >= seconds
            assert chunk.budget <= 768


@pytest.mark.parametrize("code", CODES)
def test_streaming_speaks_the_first_sentence_alone(code):
    chunks = plan_chunks(paragraph(code), 60, code, first_sentence_alone=True)
    assert chunks[0].text == SENTENCES[code][0]
    assert len(chunks) == 2


def test_batch_chunk_size_counts_words_where_words_are_spaced():
    text = " ".join(f"Sentence number {n} is right here." for n in range(6))  # 6 words each
    assert [len(chunk.split()) for chunk in chunk_text(text, 12)] == [12, 12, 12]
    assert [len(chunk.split()) for chunk in chunk_text(text, 60)] == [30, 6], "13 s at 2.5 words/s caps the chunk"


def test_batch_chunk_size_counts_english_word_time_in_chinese_japanese_korean():
    # 10 "words" are 4 s: 18 Chinese characters at 4.5/s, 20 Japanese or Korean at 5/s.
    assert chunk_limit(10, "zh") / LANGUAGES["zh"].words_per_second == pytest.approx(4.0)
    assert request_words("今天天气很好", "zh") == pytest.approx(6 / 4.5 * 2.5)
    assert request_words("오늘은 날씨가", "ko") == pytest.approx(6 / 5.0 * 2.5)
    assert request_words("Hello there, how are you?", "en") == 5


def test_an_over_long_sentence_is_cut_at_clause_marks_first():
    clause = "这是一个非常长的分句"
    sentence = "，".join([clause] * 6) + "。"
    chunks = chunk_text(sentence, 10, language="zh")
    assert len(chunks) > 1
    assert all(chunk.endswith(("，", "。")) for chunk in chunks)
    japanese = "、".join(["これはとても長い文の一部です"] * 5) + "。"
    assert all(chunk.endswith(("、", "。")) for chunk in chunk_text(japanese, 10, language="ja"))
    english = ", ".join(["one two three four five six"] * 4) + "."
    assert chunk_text(english, 12) == [
        "one two three four five six, one two three four five six,",
        "one two three four five six, one two three four five six.",
    ]


def test_a_sentence_without_clause_marks_is_cut_hard_into_even_parts():
    sentence = "这是一个没有标点的非常长的句子" * 8
    chunks = chunk_text(sentence, 10, language="zh")
    assert "".join(chunks) == sentence
    sizes = [len(chunk) for chunk in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert all(speech_seconds(chunk, "zh") <= 4.0 + 1e-9 for chunk in chunks)


def test_language_comes_from_the_voice_and_the_field_overrides_it():
    assert language_of("v2/ja_speaker_3") == "ja"
    assert language_of("my_custom_voice") is None
    assert resolve_language(None, "v2/ko_speaker_0") == "ko"
    assert resolve_language(None, "announcer") == "en"
    assert resolve_language("zh", "v2/en_speaker_1") == "zh"
    with pytest.raises(InvalidInput, match="not one of Bark's languages"):
        resolve_language("xx", "v2/en_speaker_1")


@pytest.mark.parametrize(("given", "expected"), [("pt-BR", "pt"), ("ZH", "zh"), ("zh_Hans", "zh"), ("en", "en")])
def test_language_tags_are_reduced_to_their_primary_subtag(given, expected):
    assert SynthesisRequest.model_validate({"prompt": "x", "language": given}).language == expected


@pytest.mark.parametrize("given", ["xx", "nl", "", "english", 5])
def test_a_language_bark_does_not_speak_is_refused(given):
    with pytest.raises(ValidationError, match="language"):
        SynthesisRequest.model_validate({"prompt": "x", "language": given})


def test_the_override_changes_how_a_text_is_planned():
    text = "Dr. Müller kam um 14.30 Uhr an. " * 8
    english, german = plan(text, None), plan(text, "de")
    assert sum(c.budget for c in german) > sum(c.budget for c in english), "German is spoken slower per word"


def test_words_per_request_count_cjk_by_speaking_time():
    check_words_per_request([("今天天气很好。" * 5, "zh")], limit=20, where="input")
    with pytest.raises(InvalidInput, match=r"about 33\.3 words in total .* limit of 20 .*max_words_per_request"):
        check_words_per_request([("今天天气很好。" * 10, "zh")], limit=20, where="input")


def test_tiny_checkpoint_has_ten_presets_in_each_language():
    assert len(TINY_VOICE_PRESETS) == 130
    assert {language_of(preset) for preset in TINY_VOICE_PRESETS} == set(LANGUAGES)
    assert TINY_VOICE_PRESETS[:10] == tuple(f"v2/en_speaker_{n}" for n in range(10))


@pytest.mark.parametrize("code", ["zh", "ja"])
def test_long_cjk_paragraphs_make_several_chunks_with_full_budgets(code):
    text = LONG_ZH if code == "zh" else LONG_JA
    chunks = plan(text, voice=f"v2/{code}_speaker_1")
    assert len(chunks) >= 3
    total = sum(chunk.budget for chunk in chunks) / SEMANTIC_TOKENS_PER_SECOND
    assert total >= speech_seconds(text, code) > 20


# -- any text: a plan or a clear 400, never an empty chunk -----------------------------------------
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=400)
mixed_text = st.lists(
    st.sampled_from([*(s for sentences in SENTENCES.values() for s in sentences), " ", "，", "。", "...", "x" * 30]),
    max_size=30,
).map("".join)


@given(text=any_text | mixed_text, code=st.sampled_from(CODES), max_words=st.integers(1, 60), first=st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_text_plans_into_non_empty_chunks_that_keep_every_letter(text, code, max_words, first):
    chunks = plan_chunks(text, max_words, code, first_sentence_alone=first)
    letters = [char for char in text if char.isalnum()]
    assert [char for chunk in chunks for char in chunk.text if char.isalnum()] == letters
    limit = chunk_limit(max_words, code)
    for chunk in chunks:
        assert chunk.text and chunk.text == chunk.text.strip()
        assert 0 < length_in_words(chunk.text, code) <= limit + 1, chunk


@given(text=any_text | mixed_text, code=st.sampled_from([*CODES, None]))
@settings(max_examples=80, deadline=None)
def test_any_text_is_a_200_or_a_clear_400_on_the_request_path(text, code):
    engine_settings = Settings(warmup=False, max_wait_ms=0)
    engine = StubEngine(engine_settings)

    async def scenario() -> None:
        model = stub_model(engine_settings, engine)
        try:
            response, _ = await model({"instances": [{"prompt": text, "language": code}]}, headers={})
            assert response["predictions"][0]["chunks"] >= 1
        except InvalidInput as error:
            assert str(error), "a refusal says why"
        finally:
            await model.service.close()

    asyncio.run(scenario())
    assert all(chunk.strip() for call in engine.calls for chunk in call), "no empty chunk reaches the engine"


def test_v1_counts_a_chinese_prompt_by_its_speaking_time_against_max_words_per_request():
    from model_server.schema import parse_predict_body

    limited = Settings(max_words_per_request=20)
    chinese = {"prompt": "今天天气很好。" * 10, "voice": "v2/zh_speaker_0"}  # 60 characters: 13.3 s, 33.3 words
    with pytest.raises(InvalidInput, match=r"instances: about 33\.3 words .* \(max_words_per_request\)"):
        parse_predict_body({"instances": [chinese]}, limited)
    assert parse_predict_body({"instances": [{**chinese, "prompt": "今天天气很好。" * 5}]}, limited)
