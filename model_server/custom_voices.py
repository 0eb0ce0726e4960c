"""Voices as a request names them: a preset, an OpenAI alias, `random`, or a custom voice of the caller.

This is where a voice name becomes what the engine runs (`VoiceChoice`: the batch key's voice, the
history prompt a custom voice brings, its language) and where custom voices are added, kept from a
generation, listed, read, published and deleted, with the rules every route shares: names match
`[A-Za-z0-9_-]{1,64}` and never clash with a preset, an alias or `random`; a voice belongs to the key
that made it, and another key neither sees nor uses it (a 400 "unknown voice", as if it did not
exist) unless an admin key published it; a caller's own voice wins over a published one of that name.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bark_common.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from bark_common.schema import SaveVoice
from model_server.callers import Caller
from model_server.config import Settings
from model_server.generation.languages import LANGUAGES, language_of
from model_server.generation.speaker_prompt import KeptChunk, PromptLimits, SpeakerPrompt
from model_server.generation.voices import CUSTOM_KEY, RANDOM_VOICE
from model_server.paths import VOICES_PATH
from model_server.voice_store import open_store
from model_server.voice_store.catalog import VoiceCatalog
from model_server.voice_store.records import VoiceRecord

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The shortest generation kept as a voice: 0.4 s of speech. From 10 tokens on (checked for every
#: length up to 768), a chunk's frames, floor(1.503 x tokens), keep Bark's 1.5 frames per token after
#: the cut too, so every kept voice is a valid upload.
MIN_KEPT_TOKENS = 20


@dataclass(frozen=True)
class VoiceChoice:
    """A voice resolved for the engine."""

    #: As the request names it (an alias already resolved to its preset).
    name: str
    #: The batch key's voice: a preset name, `custom:<digest>`, or None (no history: a random speaker).
    key: str | None
    #: The history a custom voice brings (None: the preset's, or none).
    prompt: SpeakerPrompt | None = None
    #: The voice's own language (a custom voice's, if it has one; a preset's from its name).
    language: str | None = None


def voice_entry(record: VoiceRecord, caller: Caller) -> dict[str, Any]:
    """A custom voice as `caller` sees it (listing, upload, publish): the owner's hash to admins only."""
    entry = record.describe()
    language = LANGUAGES.get(record.language or "")
    entry["language_name"] = language.name if language else ""
    entry["own"] = record.owner == caller.owner
    if caller.admin:
        entry["owner"] = record.owner
    return entry


class CustomVoices:
    """The presets, the aliases, `random` and the voice store's custom voices, as callers see them."""

    def __init__(self, presets: Any, limits: PromptLimits, catalog: VoiceCatalog | None, max_per_key: int = 100):
        self.presets = presets  # generation.voices.VoiceLibrary (names, aliases, resolve)
        self.limits = limits
        self.catalog = catalog
        self.max_per_key = max_per_key

    @classmethod
    def open(cls, settings: Settings, engine: Any) -> CustomVoices:
        """The voices of `settings.voice_store`, its index loaded (or degraded) and watched from now on."""
        store = open_store(settings.voice_store)
        catalog = VoiceCatalog(store, engine.prompt_limits, settings.voice_store_poll_s, settings.voice_cache_size)
        catalog.start()
        return cls(engine.voices, engine.prompt_limits, catalog, settings.max_voices_per_key)

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()

    def owner_secret(self) -> bytes:
        """The owner hash's key (from the store; without one, owners own nothing, so any key does)."""
        return self.catalog.owner_secret() if self.catalog is not None else b"no voice store"

    # -- resolving a request's voice ----------------------------------------------------------
    def choose(self, voice: str, caller: Caller, field: str = "voice") -> VoiceChoice:
        """What `voice` means for `caller`; a 400 naming `field` when it is nothing they may use."""
        if voice == RANDOM_VOICE:
            return VoiceChoice(RANDOM_VOICE, None)
        aliases = getattr(self.presets, "aliases", {})
        if voice in aliases or voice in self.presets.names:
            preset = self.presets.resolve(voice, field)
            return VoiceChoice(preset, preset, language=language_of(preset))
        record = self._find(voice, caller)
        prompt = None
        if record is not None and self.catalog is not None:
            try:
                prompt = self.catalog.prompt(record)
            except LookupError:  # deleted between the index read and now
                prompt = None
        if record is None or prompt is None:
            self.presets.check(voice, field)  # the preset library's 400, which names the list
            return VoiceChoice(voice, voice, language=language_of(voice))
        return VoiceChoice(record.name, CUSTOM_KEY + prompt.digest, prompt, record.language)

    def resolve(self, voice: str, caller: Caller, field: str = "voice") -> str:
        """`voice` checked for `caller`, an alias replaced by its preset (a request keeps the others' names).

        From the in-memory index alone: the prompt is read when the request is planned (`choose`), in
        a worker thread, not here (v1 resolves while parsing) and not twice."""
        if voice == RANDOM_VOICE:
            return voice
        aliases = getattr(self.presets, "aliases", {})
        if voice in aliases or voice in self.presets.names:
            return str(self.presets.resolve(voice, field))
        if self._find(voice, caller) is None:
            self.presets.check(voice, field)  # the preset library's 400, which names the list
        return voice

    def _find(self, name: str, caller: Caller) -> VoiceRecord | None:
        if self.catalog is None or not NAME_PATTERN.fullmatch(name):
            return None
        return self.catalog.get(caller.owner, name) or self.catalog.published(name)

    # -- the voice routes -------------------------------------------------------------------------
    def describe(self, caller: Caller) -> dict[str, Any]:
        """Presets (with their language) and aliases; then the custom voices the caller may use
        (its own and the published ones; an admin sees every voice, with its owner)."""
        voices: list[dict[str, Any]] = list(self.presets.describe())
        voices.extend(voice_entry(record, caller) for record in self._visible(caller))
        return {"voices": voices, "aliases": getattr(self.presets, "aliases", {}), "random": RANDOM_VOICE}

    def _visible(self, caller: Caller) -> list[VoiceRecord]:
        if self.catalog is None:
            return []
        records = self.catalog.records()
        if caller.admin:
            return records
        return [record for record in records if record.owner == caller.owner or record.published]

    def record_of(self, caller: Caller, name: str, owner: str | None = None, *, write: bool = False) -> VoiceRecord:
        """The voice `name` that `caller` may read (its own, a published one) or change (its own; an
        admin's `owner` names another's); a 404 otherwise, the same as for a voice that does not exist."""
        if self.catalog is None:  # no store, no custom voice of any name
            raise NotFound(f"no custom voice {name!r}: this server keeps none (no BARK_VOICE_STORE)")
        store = self.catalog
        if write:
            self._identified(caller)
        if owner is not None and owner != caller.owner and not caller.admin:
            raise Forbidden("owner: only an admin key may act on another key's voices")
        record = store.get(caller.owner if owner is None else owner, name)
        if record is None and not write:
            record = store.published(name)
        if record is None:
            raise NotFound(f"no custom voice {name!r} for this API key; GET {VOICES_PATH} lists yours")
        return record

    def download(self, caller: Caller, name: str, owner: str | None = None) -> bytes:
        record = self.record_of(caller, name, owner)
        return self._store().npz(record)

    def delete(self, caller: Caller, name: str, owner: str | None = None) -> None:
        record = self.record_of(caller, name, owner, write=True)
        if not self._store().delete(record.owner, record.name):
            raise NotFound(f"no custom voice {name!r} (deleted meanwhile)")

    def publish(self, caller: Caller, name: str, published: bool, owner: str | None = None) -> VoiceRecord:
        if not caller.admin:
            raise Forbidden("published: only an admin key may publish a voice to every key")
        record = self.record_of(caller, name, owner, write=True)
        self._store().set_published(record.owner, record.name, published)
        return self.record_of(caller, name, record.owner, write=True)

    def add(
        self,
        caller: Caller,
        name: str,
        prompt: SpeakerPrompt,
        consent: str,
        language: str | None = None,
        description: str | None = None,
        *,
        field: str = "name",
    ) -> VoiceRecord:
        """Store a new voice for `caller`; the prompt was checked already. 409 if the name is taken."""
        self.check_new(caller, name, field)
        record = VoiceRecord(
            owner=caller.owner,
            name=name,
            digest=prompt.digest,
            consent=consent,
            language=language,
            description=description,
        )
        if not self._store().add(record, prompt):
            raise Conflict(f"{field}: you already have a voice named {name!r}; delete it first or pick another name")
        return self._store().get(caller.owner, name) or record

    def keeper(
        self, caller: Caller, save: SaveVoice, source: VoiceChoice, language: str | None
    ) -> Callable[[KeptChunk], Awaitable[None]]:
        """What `save_voice` runs when the first chunk is in: its tokens kept (off the event loop) as
        `caller`'s voice, generated in the voice `source`."""

        async def keep(kept: KeptChunk) -> None:
            await asyncio.to_thread(self.keep, caller, save, kept.prompt, source, language or source.language)

        return keep

    def label(self, voice: str) -> str:
        """The `voice` label of bark_voice_requests_total: a preset's name, `random`, or `custom`."""
        return voice if voice == RANDOM_VOICE or voice in self.presets.names else "custom"

    def keep(
        self, caller: Caller, save: SaveVoice, tokens: SpeakerPrompt, source: VoiceChoice, language: str | None
    ) -> None:
        """A generated chunk's tokens, cut to what Bark reads, stored as the caller's voice `save.name`."""
        if tokens.semantic.shape[0] < MIN_KEPT_TOKENS:
            raise InvalidInput(
                f"save_voice: the first chunk made {tokens.semantic.shape[0]} semantic tokens, fewer than the "
                f"{MIN_KEPT_TOKENS} (0.4 s of speech) a voice needs; start with a longer sentence",
                param="save_voice",
            )
        prompt = tokens.cut(self.limits).check(self.limits, "save_voice")
        consent = f"kept from a generation by this API key with voice {source.name!r}"
        if source.prompt is not None:
            record = self._find(source.name, caller)
            consent += f", itself uploaded with the statement: {record.consent}" if record else ""
        description = save.description or f"kept from voice {source.name}"
        self.add(caller, save.name, prompt, consent, language, description, field="save_voice.name")

    def check_new(self, caller: Caller, name: str, field: str = "name") -> None:
        """A name a new voice of `caller` may take: its pattern, no clash, room left (400/403/409)."""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidInput(
                f"{field}: {name!r} is not a voice name: use 1 to 64 letters, digits, '-' or '_'", param=field
            )
        aliases = getattr(self.presets, "aliases", {})
        if name == RANDOM_VOICE or name in aliases or name in self.presets.names:
            raise InvalidInput(f"{field}: {name!r} is a preset, an alias or 'random'; pick another name", param=field)
        store = self._store()
        self._identified(caller)
        if store.get(caller.owner, name) is not None:
            raise Conflict(f"{field}: you already have a voice named {name!r}; delete it first or pick another name")
        if self.max_per_key and store.count(caller.owner) >= self.max_per_key:
            raise Forbidden(f"{field}: this API key keeps {self.max_per_key} voices already (max_voices_per_key)")

    def _identified(self, caller: Caller) -> None:
        """Changes need the caller's owner hash, whose secret lives in the store (503 until it answers)."""
        if not caller.identified:
            raise Unavailable(
                "the voice store has not been reachable since this replica started, so voices cannot be changed "
                "yet; presets work",
                retry_after_s=5,
            )

    def _store(self) -> VoiceCatalog:
        if self.catalog is None:
            raise Unavailable("this server has no voice store (BARK_VOICE_STORE)", retry_after_s=60)
        return self.catalog
