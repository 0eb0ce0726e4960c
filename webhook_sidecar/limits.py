"""The model server's request limits, checked at intake: a job the model would refuse is a 400 now, not a
`.failed` webhook minutes later.

The limits are the model server's own settings (`model_server.config.Settings`: `BARK_MAX_PROMPT_CHARS`,
`BARK_MAX_WORDS_PER_REQUEST`, `BARK_MAX_OUTPUT_SECONDS`, `BARK_SEMANTIC_TOKENS_PER_WORD`, ...), read from
the same environment (the chart gives both containers the same values), and they are measured with the
model server's own functions (`model_server.generation.text`, `.limits`): pure modules that load neither
torch nor KServe, so there is no second copy of a number or a rule to drift.

What a job's text is: its `prompt`, or the texts of its `turns` (dialogue: each turn has its own voice and
language), counted together as one request.

The output estimate is the model's (`check_output_seconds` over semantic-token budgets from the speaking
time of the text at the language's pace) with one budget per text instead of one per planned chunk: the
model adds a minimum budget per chunk, so its own estimate is never lower, except where it caps one chunk
at the checkpoint's token limit (a chunk over 12 s at the default rate). Anything refused here the model
would refuse too, but for that narrow band; the model's own check stays the last word.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bark_common.errors import InvalidInput
from bark_common.schema import DEFAULT_VOICE
from model_server.config import Settings as ModelSettings
from model_server.generation.languages import resolve_language
from model_server.generation.limits import check_chunk_words, check_output_seconds, check_words_per_request
from model_server.generation.text import semantic_budget, speech_seconds

#: No cap on one text's budget here: the checkpoint's token limit is the model server's to apply.
_UNCAPPED = 10**9


@dataclass(frozen=True)
class Text:
    """One text of a job, where the job holds it (`model_input.prompt`, `model_input.turns[2].text`)."""

    field: str
    text: str
    language: str


def job_texts(model_input: Mapping[str, Any], where: str = "model_input") -> Iterator[Text]:
    """The texts a model input asks to speak, each with its language (as the model server resolves it)."""
    turns = model_input.get("turns")
    if isinstance(turns, list) and turns:
        for index, turn in enumerate(turns):
            if isinstance(turn, Mapping) and isinstance(turn.get("text"), str):
                voice = str(turn.get("voice") or model_input.get("voice") or DEFAULT_VOICE)
                language = turn.get("language") or model_input.get("language")
                yield Text(f"{where}.turns[{index}].text", turn["text"], resolve_language(language, voice))
        return
    prompt = model_input.get("prompt")
    if isinstance(prompt, str):
        voice = str(model_input.get("voice") or DEFAULT_VOICE)
        yield Text(f"{where}.prompt", prompt, resolve_language(model_input.get("language"), voice))


@dataclass(frozen=True)
class IntakeLimits:
    """The model server's bounds on one request, as the sidecar applies them to a job."""

    settings: ModelSettings

    @classmethod
    def from_environment(cls) -> IntakeLimits:
        return cls(ModelSettings.model_validate({}))  # BARK_* from the environment, the model's defaults

    def check(self, model_input: Mapping[str, Any], where: str = "model_input") -> None:
        """InvalidInput (400, naming the field) for a job the model server would refuse for its size."""
        settings = self.settings
        texts = list(job_texts(model_input, where))
        characters = sum(len(text.text) for text in texts)
        if characters > settings.max_prompt_chars:
            field = texts[0].field if len(texts) == 1 else f"{where}.turns"
            raise InvalidInput(
                f"{field}: {characters} characters{' in total' if len(texts) > 1 else ''} is over the limit of "
                f"{settings.max_prompt_chars} (max_prompt_chars)",
                param=field,
            )
        size = model_input.get("batch_chunk_size")
        check_chunk_words(size if isinstance(size, int) else None, settings, f"{where}.batch_chunk_size")
        check_words_per_request(((t.text, t.language) for t in texts), settings.max_words_per_request, where)
        budgets = (
            semantic_budget(
                speech_seconds(text.text, text.language),
                settings.semantic_tokens_per_word,
                settings.semantic_tokens_min,
                _UNCAPPED,
            )
            for text in texts
        )
        try:
            check_output_seconds(budgets, settings.max_output_seconds)
        except InvalidInput as error:
            raise InvalidInput(f"{where}: {error}", param=where) from None
