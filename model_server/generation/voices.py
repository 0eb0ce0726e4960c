"""Voice presets: which exist, validating a requested one, and loading it once onto the device.

A chunk may also bring its history with it (`history`): a custom voice from the voice store, kept
on the device in a bounded cache by its content digest, or the previous chunk's tokens
(`continuity: "previous"`), used once. Its batch key names which (`CUSTOM_KEY`/`TOKENS_KEY` and the
prompt's digest), so chunks that share a key share a history, as the static scheduler requires.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import torch

from bark_common.errors import InvalidInput
from model_server import metrics
from model_server.generation.languages import LANGUAGES, language_of
from model_server.generation.speaker_prompt import SpeakerPrompt
from model_server.paths import VOICES_PATH

#: No history prompt: Bark makes up a speaker (repeatable with a seed, or greedy).
RANDOM_VOICE = "random"
#: Batch keys of chunks whose history comes with them: a stored custom voice, or another chunk's tokens.
CUSTOM_KEY = "custom:"
TOKENS_KEY = "tokens:"


class VoiceLibrary:
    """The model's speaker presets, loaded lazily and cached as tensors on the model's device."""

    def __init__(
        self, processor: Any, device: torch.device, aliases: dict[str, str] | None = None, cache_size: int = 64
    ):
        self._processor = processor
        self._device = device
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self._host: dict[str, dict[str, torch.Tensor]] = {}
        #: Custom voices on the device, by digest, least recently used first.
        self._custom: collections.OrderedDict[str, dict[str, torch.Tensor]] = collections.OrderedDict()
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self.names: tuple[str, ...] = tuple(sorted(processor.available_voice_presets))
        # Aliases pointing at presets this model lacks are dropped rather than failing later.
        self.aliases = {alias: preset for alias, preset in (aliases or {}).items() if preset in self.names}

    def resolve(self, voice: str, field: str = "voice") -> str:
        """The preset behind `voice` (a preset name or an alias); a 400 when it is neither."""
        preset = self.aliases.get(voice, voice)
        self.check(preset, field)
        return preset

    def describe(self) -> list[dict[str, str]]:
        """Each preset with the language its name declares (`unknown` for a custom preset)."""
        described = []
        for name in self.names:
            code = language_of(name)
            language = LANGUAGES.get(code) if code else None
            described.append(
                {"name": name, "language": code or "unknown", "language_name": language.name if language else ""}
            )
        return described

    def check(self, voice: str, field: str = "voice") -> None:
        """Raise a 400 for a voice the model does not have, saying where the list is."""
        if voice not in self.names:
            examples = ", ".join([*self.names[:3], *list(self.aliases)[:2]])
            raise InvalidInput(
                f"{field}: unknown voice {voice!r}; GET {VOICES_PATH} lists the {len(self.names)} "
                f"presets (e.g. {examples}), '{RANDOM_VOICE}' and your custom voices",
                param=field,
            )

    def preload(self) -> None:
        """Every preset onto the device now (at start), so the decoding loop never reads a file."""
        for name in self.names:
            self.prompt(name)

    def prompt(self, voice: str) -> dict[str, torch.Tensor]:
        """The history prompt tensors for `voice` on the model's device, read from disk once per process."""
        with self._lock:
            cached = self._cache.get(voice)
            if cached is None:
                host = self._load(voice)
                cached = {key: value.to(self._device) for key, value in host.items()}
                self._cache[voice] = cached
            return cached

    def host_prompt(self, voice: str) -> dict[str, torch.Tensor]:
        """The same prompt on the host (the decoding loop plans coarse windows from it, without a device read)."""
        with self._lock:
            return self._load(voice)

    def _load(self, voice: str) -> dict[str, torch.Tensor]:
        """Under the lock: the prompt as CPU tensors, read from disk once."""
        host = self._host.get(voice)
        if host is None:
            self.check(voice)
            encoded = self._processor("", voice_preset=voice, return_tensors="pt")
            host = {key: value.cpu() for key, value in encoded["history_prompt"].items()}
            self._host[voice] = host
        return host

    def history(self, voice: str | None, prompt: SpeakerPrompt | None) -> dict[str, torch.Tensor] | None:
        """What a row reads as its history: the prompt it brought (a custom voice's, kept on the
        device; another chunk's tokens, used once), else its preset's, else none (a random speaker)."""
        if prompt is not None:
            return self.tensors(prompt) if (voice or "").startswith(CUSTOM_KEY) else prompt.tensors(self._device)
        return self.prompt(voice) if voice else None

    def host_history(self, voice: str | None, prompt: SpeakerPrompt | None) -> dict[str, torch.Tensor] | None:
        """The same history on the host: the loop plans coarse windows from it without reading the device."""
        if prompt is not None:
            return prompt.tensors(torch.device("cpu"))
        return self.host_prompt(voice) if voice else None

    def tensors(self, prompt: SpeakerPrompt) -> dict[str, torch.Tensor]:
        """A custom voice's prompt on the device, copied there once while it stays among the recent ones."""
        digest = prompt.digest
        with self._lock:
            cached = self._custom.get(digest)
            if cached is not None:
                self._custom.move_to_end(digest)
                metrics.VOICE_CACHE.labels(cache="device", result="hit").inc()
                return cached
        metrics.VOICE_CACHE.labels(cache="device", result="miss").inc()
        tensors = prompt.tensors(self._device)
        with self._lock:
            self._custom[digest] = tensors
            while len(self._custom) > self.cache_size:
                self._custom.popitem(last=False)
        return tensors
