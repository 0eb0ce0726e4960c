"""Bark's languages: which are supported, how fast each is spoken, and which one a request is in.

Bark's voice presets name their language (`v2/zh_speaker_1` is Chinese); a request may override it
with `language`. Only Bark's 13 languages are accepted: any other is a 400, because Bark was not
trained on it and our sentence splitting and duration estimates are not calibrated for it.

Speaking rates size chunks and semantic token budgets. They are deliberately round and on the slow
side (a slower estimate gives a longer budget, never a cut-off sentence); the margin in the budget
covers the rest:
- languages written with spaces, in words per second: English 2.5 (150 words per minute, the usual
  narration pace). The others follow the ordering of Pellegrino, Coupé & Marsico, "A cross-language
  perspective on speech information rate", Language 87(3), 2011 (syllables per second read aloud:
  Spanish 7.82, French 7.18, Italian 6.99, English 6.19, German 5.97) divided by how long each
  language's words are: long, inflected or agglutinative words (German, Polish, Russian, Turkish) are
  fewer per second than English ones, short ones (Spanish, French, Hindi) a little more;
- Chinese in characters per second: 4.5, below the 5.18 syllables per second (one character is one
  syllable) measured by Pellegrino et al. for Mandarin read aloud;
- Japanese in characters per second: 5.0, the broadcast pace of about 300 characters per minute
  (kanji carry about two morae, kana one, at 7.84 morae per second in Pellegrino et al.);
- Korean in syllable blocks (one Hangul block is one syllable) per second: 5.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from bark_common.errors import InvalidInput


@dataclass(frozen=True)
class Language:
    """One of Bark's languages: its name and the pace used to estimate how long its text takes to say."""

    code: str
    name: str
    words_per_second: float
    #: For Chinese, Japanese and Korean: characters (or Hangul syllable blocks) per second.
    chars_per_second: float | None = None


#: Bark's 13 languages (its `v2/<code>_speaker_<n>` presets).
LANGUAGES: dict[str, Language] = {
    language.code: language
    for language in (
        Language("en", "English", 2.5),
        Language("de", "German", 2.0),
        Language("es", "Spanish", 2.7),
        Language("fr", "French", 2.7),
        Language("hi", "Hindi", 2.6),
        Language("it", "Italian", 2.5),
        Language("ja", "Japanese", 2.5, chars_per_second=5.0),
        Language("ko", "Korean", 2.5, chars_per_second=5.0),
        Language("pl", "Polish", 2.0),
        Language("pt", "Portuguese", 2.4),
        Language("ru", "Russian", 2.0),
        Language("tr", "Turkish", 1.8),
        Language("zh", "Chinese", 2.5, chars_per_second=4.5),
    )
}

DEFAULT_LANGUAGE = "en"

#: The pace one "word" stands for where words are not separated by spaces (zh, ja, ko): the
#: English rate, so `batch_chunk_size` and `max_words_per_request` mean the same speaking time.
WORD_EQUIVALENT_PER_SECOND = LANGUAGES["en"].words_per_second


def language_of(preset: str) -> str | None:
    """`v2/de_speaker_3` -> `de`; None for a preset outside Bark's naming (a custom voice)."""
    code = preset.rsplit("/", 1)[-1].split("_", 1)[0]
    return code if code in LANGUAGES else None


def resolve_language(requested: str | None, voice: str, field: str = "language") -> str:
    """The language to speak: the request's `language` if given (the schema already normalised it:
    `pt-BR` is `pt`), else the voice preset's, else English (a custom preset without one in its name)."""
    if requested is not None:
        if requested not in LANGUAGES:
            raise InvalidInput(
                f"{field}: {requested!r} is not one of Bark's languages; use one of {', '.join(LANGUAGES)}",
                param=field,
            )
        return requested
    return language_of(voice) or DEFAULT_LANGUAGE
