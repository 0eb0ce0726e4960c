"""Voice presets: which exist, validating a requested one, and loading it once onto the device."""

from __future__ import annotations

import threading
from typing import Any

import torch

from bark_common.errors import InvalidInput
from model_server.generation.languages import LANGUAGES, language_of
from model_server.paths import VOICES_PATH


class VoiceLibrary:
    """The model's speaker presets, loaded lazily and cached as tensors on the model's device."""

    def __init__(self, processor: Any, device: torch.device, aliases: dict[str, str] | None = None):
        self._processor = processor
        self._device = device
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self._host: dict[str, dict[str, torch.Tensor]] = {}
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
                f"available voices (e.g. {examples})",
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
